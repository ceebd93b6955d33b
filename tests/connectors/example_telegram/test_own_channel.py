"""A connector package brings its own channel: Telegram runs beside the built-in social
connector under one ``serve_all``, its customers are routed to agents who have Telegram
capacity, and replies go back through Telegram, never through Meta; the reply's outcome,
reported by the connector on ``rd.inbound.telegram``, reaches the log through intake."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import nats
import pytest
from aiohttp import web

from connectors.sdk import registry
from connectors.sdk.conformance import FakeProvider
from events.model import MessageSent
from events.store import EventStore
from services.bus.embedded import EmbeddedNats, free_port
from services.config import AgentSeed
from tests.integration.system import accept_if_offered, eventually, running_system, system_config

from .connector import SECRET_HEADER
from .test_conformance import BOT_TOKEN, SECRET, update

pytestmark = pytest.mark.integration


@pytest.fixture
def telegram_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint("telegram", "tests.connectors.example_telegram.connector:TelegramConnector", registry.GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda *, group: [*entry_points(group=group), ep])


async def test_telegram_has_its_own_channel_beside_meta(
    tmp_path: Path, clean_nats: EmbeddedNats, telegram_installed: None
) -> None:
    async def sent(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "result": {"message_id": 99}})

    telegram_api, meta_api = FakeProvider(handler=sent), FakeProvider(handler=sent)
    await telegram_api.start()
    await meta_api.start()
    config = system_config(tmp_path, clean_nats.url)
    telegram_port = free_port()
    config.connectors["telegram"] = {
        "port": telegram_port,
        "bot_token": BOT_TOKEN,
        "secret_token": SECRET,
        "api_base_url": telegram_api.url,
    }
    config.connectors["social"] = {"port": free_port(), "app_secret": "meta-secret", "graph_base_url": meta_api.url}
    config.agents = (
        AgentSeed(id="ava", skills={"billing": 3}, languages={"en": 5}, capacity={"telegram": 2}),
        AgentSeed(id="sol", skills={"billing": 3}, languages={"en": 5}, capacity={"telegram": 0}),
    )
    try:
        async with running_system(config, clean_nats) as system:
            async with system.http.post(
                f"http://127.0.0.1:{telegram_port}/telegram/webhook",
                data=update(update_id=7001, text="hello, my invoice is wrong"),
                headers={SECRET_HEADER: SECRET, "Content-Type": "application/json"},
            ) as r:
                assert r.status == 200

            async def customer() -> str | None:
                status, body = await system.get("/v1/customers", identity="telegram:42")
                return body["customers"][0]["customer_id"] if status == 200 else None

            customer_id = await eventually(customer)
            conv = await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer_id)))
            assert (conv["channel"], conv["agent_id"]) == ("telegram", "ava")  # sol has no Telegram capacity

            status, body = await system.post(f"/v1/conversations/{conv['id']}/reply", {"text": "On it!"})
            assert status == 202, body
            await eventually(lambda: _has(telegram_api.requests))
            [recorded] = await eventually(lambda: _sent(clean_nats.url, customer_id))
    finally:
        await telegram_api.stop()
        await meta_api.stop()
    [request] = telegram_api.requests
    assert json.loads(request.body) == {"chat_id": "42", "text": "On it!"}
    assert meta_api.requests == []
    assert (recorded.channel, recorded.conversation_id, recorded.provider_message_id) == ("telegram", conv["id"], "99")


async def _has(items: list[Any]) -> bool:
    return bool(items)


async def _sent(nats_url: str, customer_id: str) -> list[MessageSent] | None:
    nc = await nats.connect(nats_url)
    try:
        events = await EventStore(nc, nc.jetstream()).read_customer(customer_id)
    finally:
        await nc.close()
    return [e.event for e in events if isinstance(e.event, MessageSent)] or None
