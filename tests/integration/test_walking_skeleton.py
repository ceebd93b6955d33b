"""Issue 2, end to end over a real nats-server: a Twilio-signed SMS reaches the SMS
connector, becomes a conversation routed to the right agent, and lands on the customer's
timeline, all observed through the public HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from services.config import Config, load
from services.embedded_nats import EmbeddedNats, free_port
from services.up import Started, serve_all
from tests.integration.system import eventually

pytestmark = pytest.mark.integration

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
    config: Config, nats: EmbeddedNats, services: tuple[str, ...] | None = None
) -> AsyncIterator[System]:
    stop = asyncio.Event()
    started: list[Started] = []
    kwargs = {"services": services} if services is not None else {}
    task = asyncio.create_task(serve_all(config, nats.url, API_TOKEN, stop, started.append, **kwargs))
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


@pytest.fixture
async def system(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[System]:
    async with running_system(system_config(tmp_path, clean_nats.url), clean_nats) as s:
        yield s


async def accept_if_offered(system: System, conv: dict[str, Any]) -> dict[str, Any]:
    if conv["status"] == "offered":
        status, body = await system.post(f"/v1/conversations/{conv['id']}/accept", {})
        assert status == 200, body
        return body["conversation"]  # type: ignore[no-any-return]
    return conv


async def test_signed_sms_is_routed_to_the_spanish_agent_and_on_the_timeline(system: System) -> None:
    phone = "+15551230001"
    assert await system.send_sms("SM" + "a" * 32, phone, "Hola, necesito un reembolso de mi factura") == 200
    customer_id = await eventually(lambda: system.customer(phone))
    conv = await eventually(lambda: system.conversation_of(customer_id))
    conv = await accept_if_offered(system, conv)
    assert conv["agent_id"] == "bruno"
    assert conv["status"] == "assigned"
    assert conv["requirements"]["language"] == "es"
    assert conv["reason"] is not None

    async def timeline_with_message() -> list[dict[str, Any]] | None:
        status, body = await system.get(f"/v1/customers/{customer_id}/timeline")
        entries = body.get("entries", []) if status == 200 else []
        texts = [e.get("text") for e in entries]
        return entries if "Hola, necesito un reembolso de mi factura" in texts else None

    entries = await eventually(timeline_with_message)
    assert any(e.get("agent_id") == "bruno" for e in entries)

    status, body = await system.post(f"/v1/conversations/{conv['id']}/resolve", {})
    assert status == 200, body
    assert body["conversation"]["status"] == "resolved"
    status, body = await system.post(f"/v1/conversations/{conv['id']}/resolve", {})
    assert status in (404, 409), body  # nothing to resolve twice

    async def resolved_summary() -> dict[str, Any] | None:
        status, body = await system.get(f"/v1/conversations/{conv['id']}")
        return body if status == 200 and body["status"] == "resolved" else None

    summary = await eventually(resolved_summary)
    assert summary["agent_id"] == "bruno"


async def test_forged_signature_is_refused_and_publishes_nothing(system: System) -> None:
    before = await system.inbound_count()
    assert await system.send_sms("SM" + "b" * 32, "+15551230002", "hello", signature="forged=") == 403
    assert await system.send_sms("SM" + "b" * 32, "+15551230002", "hello", signature="") == 403
    await asyncio.sleep(0.3)
    assert await system.inbound_count() == before
    assert await system.customer("+15551230002") is None


async def test_the_same_message_sid_twice_is_one_message(system: System) -> None:
    phone = "+15551230003"
    for _ in range(2):
        assert await system.send_sms("SM" + "c" * 32, phone, "my invoice is wrong") == 200
    customer_id = await eventually(lambda: system.customer(phone))
    await eventually(lambda: system.conversation_of(customer_id))
    await asyncio.sleep(0.5)
    status, body = await system.get(f"/v1/customers/{customer_id}/timeline")
    assert status == 200, body
    inbound = [e for e in body["entries"] if e.get("direction") == "in"]
    assert len(inbound) == 1


async def test_a_full_agent_gets_no_more_than_capacity(system: System) -> None:
    # Five Spanish billing conversations: only Bruno speaks Spanish, with 3 SMS slots.
    phones = [f"+1555123100{i}" for i in range(5)]
    for i, phone in enumerate(phones):
        assert await system.send_sms(f"SM{i:032d}", phone, "Hola, tengo un problema con mi factura") == 200

    async def bruno_full() -> dict[str, Any] | None:
        status, body = await system.get("/v1/agents/bruno")
        assert status == 200, body
        return body if body["load"].get("sms", 0) >= 3 else None

    await eventually(bruno_full)
    await asyncio.sleep(1.0)  # give the router every chance to over-assign
    status, bruno = await system.get("/v1/agents/bruno")
    assert bruno["load"]["sms"] == 3
    status, body = await system.get("/v1/conversations", status="waiting")
    assert status == 200
    assert body["count"] == 2
