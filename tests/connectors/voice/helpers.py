"""A voice system for tests: every service plus the voice connector over a real nats-server,
and a fake Twilio (the Calls API) built from Twilio's documented requests and answers."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

from aiohttp import web
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from connectors.sdk.conformance import FakeProvider
from services.bus.embedded import EmbeddedNats, free_port
from services.config import AgentSeed
from tests.integration.system import System, eventually, running_system, system_config

T = TypeVar("T")

VOICE_TOKEN = "test-voice-token"
ACCOUNT = "AC" + "7" * 32
OUR_NUMBER = "+15550001111"
CALLER = "+15557770123"
NOT_IN_PROGRESS = {"code": 21220, "message": "Call is not in-progress. Cannot redirect.", "status": 400}


def call_sid(n: int) -> str:
    return "CA" + f"{n:032x}"


@dataclass
class FakeTwilio:
    """The Calls API: updating a call answers 200 unless the call is over (400, code 21220);
    creating one answers 201 with a new sid."""

    ended: set[str] = field(default_factory=set)
    provider: FakeProvider | None = None
    # Answers to give call updates before the usual one: (status, Retry-After or "").
    refusals: list[tuple[int, str]] = field(default_factory=list)

    async def start(self) -> str:
        self.provider = FakeProvider(handler=self._answer)
        return await self.provider.start()

    async def stop(self) -> None:
        if self.provider is not None:
            await self.provider.stop()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        tail = request.path.rsplit("/Calls", 1)[-1]
        if tail == ".json":
            return web.json_response({"sid": "CA" + "f" * 32, "status": "queued"}, status=201)
        sid = tail.strip("/").removesuffix(".json")
        if self.refusals:
            status, retry_after = self.refusals.pop(0)
            code = 20429 if status == 429 else 20500
            headers = {"Retry-After": retry_after} if retry_after else {}
            return web.json_response(
                {"code": code, "message": "refused", "status": status}, status=status, headers=headers
            )
        if sid in self.ended:
            return web.json_response(NOT_IN_PROGRESS, status=400)
        return web.json_response({"sid": sid, "status": "in-progress"})

    def calls_api(self) -> list[dict[str, str]]:
        """Every Calls API request's form, with ``path``."""
        assert self.provider is not None
        return [
            {"path": r.path, **{k: v[0] for k, v in parse_qs(r.body.decode()).items()}}
            for r in self.provider.requests
            if "/Calls" in r.path
        ]


def twiml(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "Response", text
    return root


@dataclass
class Voice:
    system: System
    base: str
    twilio: FakeTwilio

    async def webhook(self, path: str, params: dict[str, str], *, token: str = VOICE_TOKEN) -> tuple[int, str]:
        url = self.base + path
        signature = RequestValidator(token).compute_signature(url, params)
        async with self.system.http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as r:
            return r.status, await r.text()


def call_params(sid: str, **extra: str) -> dict[str, str]:
    """The parameters Twilio sends with every Voice webhook (its "Voice request" reference)."""
    return {
        "CallSid": sid,
        "AccountSid": ACCOUNT,
        "From": CALLER,
        "To": OUR_NUMBER,
        "Caller": CALLER,
        "Called": OUR_NUMBER,
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
        **extra,
    }


@contextlib.asynccontextmanager
async def voice_system(
    tmp_path: Path, nats: EmbeddedNats, agents: tuple[AgentSeed, ...], **voice: Any
) -> AsyncIterator[Voice]:
    twilio = FakeTwilio()
    api = await twilio.start()
    config = system_config(tmp_path, nats.url)
    port = free_port()
    config.connectors["voice"] = {
        "port": port,
        "auth_token": VOICE_TOKEN,
        "account_sid": ACCOUNT,
        "api_base_url": api,
        "languages": {"1": "en", "2": "es"},
        "menu_prompt": "For English press 1. Para español pulse 2.",
        "agents": {"ava": "client:ava", "bea": "sip:bea@pbx.example.com", "cid": "+15553334444"},
        "caller_id": OUR_NUMBER,
        **voice,
    }
    config.agents = agents
    try:
        async with running_system(config, nats) as system:
            yield Voice(system, f"http://127.0.0.1:{port}", twilio)
    finally:
        await twilio.stop()


async def soon(probe: Callable[[], Awaitable[T | None]]) -> T:
    """``eventually`` with room for a loaded 2-core machine (the whole system runs in-process)."""
    return await eventually(probe, timeout=40.0)
