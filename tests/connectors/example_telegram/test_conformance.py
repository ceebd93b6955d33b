"""The Telegram example passes the conformance kit (connectors/README.md shows this file)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from aiohttp import web

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
    supports_attachments: ClassVar[bool | None] = True  # sendDocument with the file's link
    body_signed: ClassVar[bool | None] = False  # a shared secret in a header, not a signature

    def config(self, provider_url: str) -> dict[str, Any]:
        return {"bot_token": BOT_TOKEN, "secret_token": SECRET, "api_base_url": provider_url}

    def valid_request(self, base_url: str) -> SampleRequest:
        return SampleRequest(
            path="/telegram/webhook",
            body=update(),
            headers={SECRET_HEADER: SECRET, "Content-Type": "application/json"},
            expect={"provider_message_id": "123456:1001", "sender": "42", "text": "hello, my invoice?"},
        )

    def forged_request(self, base_url: str) -> SampleRequest:
        return SampleRequest(path="/telegram/webhook", body=update(), headers={SECRET_HEADER: "guess"})

    def malformed_request(self, base_url: str) -> SampleRequest:
        return SampleRequest(path="/telegram/webhook", body=b"{not json", headers={SECRET_HEADER: SECRET})

    async def provider_accepts(self, request: web.Request) -> web.StreamResponse:
        assert request.path in (f"/bot{BOT_TOKEN}/sendMessage", f"/bot{BOT_TOKEN}/sendDocument")
        return web.json_response({"ok": True, "result": {"message_id": 99}})

    async def provider_rejects(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": False, "error_code": 400, "description": "chat not found"}, status=400)

    def check_delivered(self, request: RecordedRequest, reply: DeliverReply) -> None:
        assert request.path == f"/bot{BOT_TOKEN}/sendMessage"
        assert json.loads(request.body) == {"chat_id": reply.contact, "text": reply.text}
