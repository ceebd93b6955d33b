"""The Telegram example passes the conformance kit and is discovered through its entry point."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

import pytest
from aiohttp import web

from connectors.sdk import registry
from connectors.sdk.conformance import ConnectorConformance, RecordedRequest, SampleRequest
from events.model import DeliverReply

from .connector import SECRET_HEADER, TelegramConnector

BOT_TOKEN = "123456:ABC-test"
SECRET = "s3cret-token_value"


def update(update_id: int = 1001, text: str = "hello, my invoice?") -> bytes:
    return json.dumps(
        {
            "update_id": update_id,
            "message": {
                "message_id": 7,
                "from": {"id": 42, "is_bot": False, "first_name": "Ada"},
                "chat": {"id": 42, "type": "private"},
                "date": 1_700_000_000,
                "text": text,
            },
        }
    ).encode()


class TestTelegramConformance(ConnectorConformance):
    connector_class = TelegramConnector
    reply_contact: ClassVar[str] = "42"
    expected_sent_id: ClassVar[str | None] = "99"

    def config(self, provider_url: str) -> dict[str, Any]:
        return {"bot_token": BOT_TOKEN, "secret_token": SECRET, "api_base_url": provider_url}

    def valid_request(self, base_url: str) -> SampleRequest:
        return SampleRequest(
            path="/telegram/webhook",
            body=update(),
            headers={SECRET_HEADER: SECRET, "Content-Type": "application/json"},
            expect={"provider_message_id": "telegram:123456:1001", "sender": "42", "text": "hello, my invoice?"},
        )

    def forged_request(self, base_url: str) -> SampleRequest:
        return SampleRequest(path="/telegram/webhook", body=update(), headers={SECRET_HEADER: "guess"})

    def malformed_request(self, base_url: str) -> SampleRequest:
        return SampleRequest(path="/telegram/webhook", body=b"{not json", headers={SECRET_HEADER: SECRET})

    async def provider_accepts(self, request: web.Request) -> web.StreamResponse:
        assert request.path == f"/bot{BOT_TOKEN}/sendMessage"
        return web.json_response({"ok": True, "result": {"message_id": 99}})

    async def provider_rejects(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": False, "error_code": 400, "description": "chat not found"}, status=400)

    def check_delivered(self, request: RecordedRequest, reply: DeliverReply) -> None:
        assert request.path == f"/bot{BOT_TOKEN}/sendMessage"
        assert json.loads(request.body) == {"chat_id": reply.contact, "text": reply.text}


def test_entry_point_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `pip install relaydesk-telegram` does, declared in its pyproject.toml:
    [project.entry-points."relaydesk.connectors"] telegram = "...connector:TelegramConnector"."""
    ep = EntryPoint("telegram", "tests.connectors.example_telegram.connector:TelegramConnector", registry.GROUP)

    def with_telegram(*, group: str) -> list[EntryPoint]:
        return [*entry_points(group=group), ep]

    monkeypatch.setattr(registry, "entry_points", with_telegram)
    assert "telegram" in registry.available()
    assert registry.load("telegram") is TelegramConnector
    assert TelegramConnector.from_config({"bot_token": BOT_TOKEN, "port": "9000"}).settings.port == 9000
