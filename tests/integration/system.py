"""Helpers for system tests: a real nats-server, every service in-process (``running_system``)
seen through its HTTP API (``System``), and polling with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from twilio.request_validator import RequestValidator

from events.model import ConversationOpened, MessageReceived, Requirements, RoutingRequested
from events.store import Append, EventStore, StoredEvent
from services.bus.embedded import EmbeddedNats, free_port
from services.config import Config, load
from services.up import Started, serve_all

T = TypeVar("T")


def exit_reason(stderr: str) -> str:
    """Why a service process exited, from its last word: the ``relaydesk.exit`` JSON line (its
    logs in JSON, as off a terminal) or a plain ``relaydesk: …`` line; "" if it gave none."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("{") and '"relaydesk.exit"' in line:
            return str(json.loads(line)["reason"])
        if line.startswith("relaydesk: "):
            return line.removeprefix("relaydesk: ")
    return ""


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 15.0, every: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; fail with a clear message after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: T | None = None
    while asyncio.get_running_loop().time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last probe: {last!r})")


async def open_conversation(
    store: EventStore,
    customer: str,
    conversation: str,
    *,
    channel: str = "sms",
    skills: dict[str, int] | None = None,
    language: str = "en",
    text: str = "hello",
) -> None:
    """What intake appends for a first message, written directly."""
    now = datetime.now(UTC)
    seq = await store.append(
        Append(
            ConversationOpened(
                at=now, customer_id=customer, conversation_id=conversation, channel=channel, contact="+15550000000"
            ),  # type: ignore[arg-type]
            expected=0,
        )
    )
    seq = await store.append(
        Append(
            MessageReceived(
                at=now,
                customer_id=customer,
                conversation_id=conversation,
                channel=channel,  # type: ignore[arg-type]
                message_id=f"m-{conversation}",
                provider_message_id=f"p-{conversation}",
                text=text,
                language=language,
            ),
            expected=seq,
        )
    )
    await store.append(
        Append(
            RoutingRequested(
                at=now,
                customer_id=customer,
                conversation_id=conversation,
                channel=channel,  # type: ignore[arg-type]
                requirements=Requirements(skills=skills or {"billing": 1}, language=language),
            ),
            expected=seq,
        )
    )


AUTH_TOKEN = "test-twilio-token"
API_TOKEN = "test-operator-token"


@dataclass
class System:
    config: Config
    api: str
    sms_url: str
    http: aiohttp.ClientSession
    nats: EmbeddedNats

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with self.http.get(self.api + path, params=params, headers=headers) as r:
            return r.status, await r.json()

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with self.http.post(self.api + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def send_sms(
        self, sid: str, sender: str, body: str, *, signature: str | None = None, to: str = "+15557654321"
    ) -> int:
        params = {
            "MessageSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": sender,
            "To": to,
            "Body": body,
            "NumMedia": "0",
        }
        sig = (
            signature if signature is not None else RequestValidator(AUTH_TOKEN).compute_signature(self.sms_url, params)
        )
        async with self.http.post(self.sms_url, data=params, headers={"X-Twilio-Signature": sig}) as r:
            return r.status

    async def inbound_count(self) -> int:
        import nats

        nc = await nats.connect(self.nats.url)
        try:
            info = await nc.jetstream().stream_info("RD_INBOUND")
            return int(info.state.messages)
        finally:
            await nc.close()

    async def customer_log(self, customer_id: str) -> list[StoredEvent]:
        """The customer's events as the log holds them now (over a connection of its own)."""
        import nats

        nc = await nats.connect(self.nats.url)
        try:
            return await EventStore(nc, nc.jetstream()).read_customer(customer_id)
        finally:
            await nc.close()

    async def customer(self, phone: str) -> str | None:
        status, body = await self.get("/v1/customers", identity=f"sms:{phone}")
        return body["customers"][0]["customer_id"] if status == 200 else None

    async def conversation_of(self, customer_id: str) -> dict[str, Any] | None:
        status, body = await self.get("/v1/conversations")
        assert status == 200, body
        for conv in body["conversations"]:
            if conv["customer_id"] == customer_id and conv["status"] in ("offered", "assigned"):
                return conv  # type: ignore[no-any-return]
        return None


def system_config(tmp_path: Path, nats_url: str, **router: Any) -> Config:
    env = {
        "RELAYDESK_NATS_URL": nats_url,
        "RELAYDESK_DATA_DIR": str(tmp_path / "data"),
        "RELAYDESK_API_PORT": str(free_port()),
        "RELAYDESK_CONNECTOR_SMS_PORT": str(free_port()),
        "RELAYDESK_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "RELAYDESK_API_TOKEN": API_TOKEN,
    }
    config = load(env=env)
    if router:
        import msgspec

        config.router = msgspec.structs.replace(config.router, **router)
    return config


@contextlib.asynccontextmanager
async def running_system(
    config: Config, nats: EmbeddedNats, services: tuple[str, ...] | None = None, config_path: Path | None = None
) -> AsyncIterator[System]:
    """``config_path``: a file the API follows for ``[api.operators]`` (as ``relaydesk up --config``)."""
    stop = asyncio.Event()
    started: list[Started] = []
    kwargs: dict[str, Any] = {"services": services} if services is not None else {}
    task = asyncio.create_task(
        serve_all(config, nats.url, API_TOKEN, stop, started.append, config_path=config_path, **kwargs)
    )
    try:
        await eventually(lambda: _ready(started, task), timeout=20)
        sms_url = started[0].connector_urls["sms"][0].rstrip("/") + "/twilio/sms"
        async with aiohttp.ClientSession() as http:
            yield System(config, f"http://{config.api.host}:{config.api.port}", sms_url, http, nats)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0


async def _ready(started: list[Started], task: asyncio.Task[int]) -> bool:
    if task.done():
        raise AssertionError(f"the system stopped early: {task.result()!r}")
    return bool(started)


async def accept_if_offered(system: System, conv: dict[str, Any]) -> dict[str, Any]:
    if conv["status"] == "offered":
        status, body = await system.post(f"/v1/conversations/{conv['id']}/accept", {})
        assert status == 200, body
        return body["conversation"]  # type: ignore[no-any-return]
    return conv
