"""The Meta connector passes the conformance kit (own nats-server per test, a local fake Graph API),
plus outbound checks that need the worker: WhatsApp delivery and the 24-hour window."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import msgspec
from aiohttp import web

from connectors.sdk.conformance import ConnectorConformance, Harness, RecordedRequest, SampleRequest
from connectors.social.connector import MetaConnector
from events import subjects
from events.codec import encode
from events.model import DeliverReply, DeliveryFailed, MessageSent

from .payloads import (
    ACCESS_TOKEN,
    APP_SECRET,
    PAGE_ID,
    PHONE_NUMBER_ID,
    VECTOR_BODY,
    VECTOR_MID,
    VECTOR_SIGNATURE,
    signed,
)

VERSION = "v21.0"
SENT_MID = "m_sent_by_fake_graph"
SENT_WAMID = "wamid.sent-by-fake-graph"


async def fake_graph(request: web.Request) -> web.StreamResponse:
    """The Send API: Messenger/IG answer recipient_id + message_id, WhatsApp a messages list."""
    if request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
        return web.json_response({"error": {"message": "Invalid OAuth access token.", "code": 190}}, status=401)
    body = await request.json()
    if request.path == f"/{VERSION}/{PHONE_NUMBER_ID}/messages" and body.get("messaging_product") == "whatsapp":
        return web.json_response(
            {"messaging_product": "whatsapp", "contacts": [{"input": body["to"]}], "messages": [{"id": SENT_WAMID}]}
        )
    if request.path == f"/{VERSION}/{PAGE_ID}/messages":
        return web.json_response({"recipient_id": body["recipient"]["id"], "message_id": SENT_MID})
    return web.json_response({"error": {"message": "Unknown path components", "code": 2500}}, status=400)


class TestMetaConformance(ConnectorConformance):
    connector_class = MetaConnector
    reply_contact: ClassVar[str] = "PSID_1"
    expected_sent_id: ClassVar[str | None] = SENT_MID
    supports_attachments: ClassVar[bool | None] = True  # media messages by link
    body_signed: ClassVar[bool | None] = True  # X-Hub-Signature-256: an HMAC of the body

    def config(self, provider_url: str) -> dict[str, Any]:
        return {
            "app_secret": APP_SECRET,
            "verify_token": "vt",
            "access_token": ACCESS_TOKEN,
            "graph_base_url": provider_url,
            "graph_version": VERSION,
        }

    def valid_request(self, base_url: str) -> SampleRequest:
        # The wire-formats vector, with Meta's own signature.
        return SampleRequest(
            path="/meta/webhook",
            body=VECTOR_BODY,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": VECTOR_SIGNATURE},
            expect={
                "provider_message_id": VECTOR_MID,
                "provider": "meta",
                "sender": "PSID_1",
                "recipient": PAGE_ID,
                "text": "hello, world!",
                "public": False,
                "metadata": {
                    "platform": "messenger",
                    "kind": "message",
                    "page_id": PAGE_ID,
                    "provider_at": "2016-03-23T00:25:52.478000+00:00",  # Meta's time: metadata only
                },
            },
        )

    def forged_request(self, base_url: str) -> SampleRequest:
        return SampleRequest(path="/meta/webhook", body=VECTOR_BODY, headers=signed(VECTOR_BODY, "not-the-secret"))

    def malformed_request(self, base_url: str) -> SampleRequest:
        body = b'{"object":"page","entry":[{"id":'
        return SampleRequest(path="/meta/webhook", body=body, headers=signed(body))

    async def provider_accepts(self, request: web.Request) -> web.StreamResponse:
        return await fake_graph(request)

    async def provider_rejects(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "error": {
                    "message": "(#100) No matching user found",
                    "type": "OAuthException",
                    "code": 100,
                    "error_subcode": 2018001,
                    "fbtrace_id": "Aabc",
                }
            },
            status=400,
        )

    def outbound_reply(self) -> DeliverReply:
        reply = super().outbound_reply()
        return msgspec.structs.replace(
            reply,
            metadata={
                "platform": "messenger",
                "kind": "message",
                "page_id": PAGE_ID,
                "last_customer_message_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
            },
        )

    def check_delivered(self, request: RecordedRequest, reply: DeliverReply) -> None:
        assert request.method == "POST"
        assert request.path == f"/{VERSION}/{PAGE_ID}/messages"
        assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert json.loads(request.body) == {
            "recipient": {"id": reply.contact},
            "messaging_type": "RESPONSE",
            "message": {"text": reply.text},
        }

    # -- beyond the kit: WhatsApp and the window through the worker --------------------------

    async def _publish(self, harness: Harness, contact: str, **metadata: str) -> DeliverReply:
        reply = DeliverReply(
            conversation_id="conv_" + uuid.uuid4().hex[:12],
            customer_id="cus_" + uuid.uuid4().hex[:12],
            channel="social",
            reply_id="rep_" + uuid.uuid4().hex[:12],
            contact=contact,
            text="Tu pedido sale mañana ✓",
            metadata=metadata,
        )
        await harness.nc.jetstream().publish(
            subjects.outbound("social"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id}
        )
        return reply

    async def test_whatsapp_reply_is_delivered_and_recorded(self, harness: Harness) -> None:
        recent = (datetime.now(UTC) - timedelta(hours=23)).isoformat()
        reply = await self._publish(
            harness,
            "+15551230000",
            platform="whatsapp",
            kind="message",
            phone_number_id=PHONE_NUMBER_ID,
            last_customer_message_at=recent,
        )
        outcome = await self._outcome(harness, reply)
        assert isinstance(outcome, MessageSent), outcome
        assert outcome.provider_message_id == SENT_WAMID
        [request] = harness.fake.requests
        assert request.path == f"/{VERSION}/{PHONE_NUMBER_ID}/messages"
        assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert json.loads(request.body) == {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "15551230000",
            "type": "text",
            "text": {"body": "Tu pedido sale mañana ✓"},
        }

    async def test_reply_outside_the_window_fails_without_calling_meta(self, harness: Harness) -> None:
        stale = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
        wa = await self._publish(
            harness,
            "+15551230000",
            platform="whatsapp",
            phone_number_id=PHONE_NUMBER_ID,
            last_customer_message_at=stale,
        )
        fb = await self._publish(
            harness, "PSID_1", platform="messenger", page_id=PAGE_ID, last_customer_message_at=stale
        )
        reasons: dict[str, str] = {}
        for reply, platform in ((wa, "whatsapp"), (fb, "messenger")):
            outcome = await self._outcome(harness, reply)
            assert isinstance(outcome, DeliveryFailed), outcome
            assert "outside the 24-hour messaging window" in outcome.reason
            reasons[platform] = outcome.reason
        assert "WhatsApp needs an approved template" in reasons["whatsapp"]
        assert "messenger" in reasons["messenger"]
        assert harness.fake.requests == [], "nothing may reach Meta outside the window"
        assert harness.runtime.metrics["delivery_retries"] == 0
