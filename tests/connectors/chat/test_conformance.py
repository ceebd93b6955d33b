"""The web chat connector passes the conformance kit.

Mapping: the kit drives HTTP requests; the chat's HTTP inbound route is ``POST /messages``
(``Authorization: Bearer <session token>``, JSON ``{"client_msg_id","text"}``); socket messages
take the same code path (``_accept``: the runtime's publisher, then the history stream), so the
kit checks the publish contract the socket relies on: one event per ``client_msg_id``, forged
session token → 403, malformed → 400, oversized → 413, NATS down → 503.

Chat has no provider API to call: ``deliver`` stores the reply in the history stream
``RD_CHAT``, from which every instance holding a socket of the visitor pushes it. The kit's
three outbound tests (which expect a request at a fake provider API) are replaced here by
their chat meaning: a ``DeliverReply`` on ``rd.out.chat`` is stored for the visitor and its
outcome reported as sent (intake records ``MessageSent``); a contact that is not a chat
address → reported failed (``DeliveryFailed``) without retries; there is no transient
provider failure to retry (nothing remote is called).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

import aiohttp
import msgspec
import pytest
from aiohttp import web

from connectors.chat import tokens
from connectors.chat.connector import WebChatConnector
from connectors.sdk.conformance import ConnectorConformance, Harness, RecordedRequest, SampleRequest, read_outcomes
from events import subjects
from events.codec import encode
from events.model import Attachment, DeliverReply, DeliveryFailed, MessageSent

from .helpers import SECRET, WIDGET_KEY, open_session

ADDRESS = tokens.visitor_address(SECRET, "conformance-visitor-0123456789")
CLIENT_MSG_ID = "c-0001"


def _token(secret: str = SECRET) -> str:
    return tokens.issue_token(secret, tokens.SessionClaims(ADDRESS, int(time.time()) + 300))


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


class TestChatConformance(ConnectorConformance):
    connector_class = WebChatConnector
    reply_contact: ClassVar[str] = ADDRESS
    body_signed: ClassVar[bool | None] = False  # a bearer session token

    def config(self, provider_url: str) -> dict[str, Any]:
        return {"widget_key": WIDGET_KEY, "session_secret": SECRET}

    def valid_request(self, base_url: str) -> SampleRequest:
        body = json.dumps({"client_msg_id": CLIENT_MSG_ID, "text": "Is my order shipped?"}).encode()
        return SampleRequest(
            "/messages",
            body,
            _headers(_token()),
            expect={
                "provider_message_id": tokens.provider_message_id(ADDRESS, CLIENT_MSG_ID),
                "sender": ADDRESS,
                "text": "Is my order shipped?",
                "provider": "webchat",
            },
        )

    def forged_request(self, base_url: str) -> SampleRequest:
        body = json.dumps({"client_msg_id": CLIENT_MSG_ID, "text": "forged"}).encode()
        return SampleRequest("/messages", body, _headers(_token("a-guessed-secret-0123456789abcdefgh")))

    def malformed_request(self, base_url: str) -> SampleRequest:
        return SampleRequest("/messages", b'{"client_msg_id": ', _headers(_token()))

    async def provider_accepts(self, request: web.Request) -> web.StreamResponse:
        raise AssertionError("the chat connector calls no provider API")

    def check_delivered(self, request: RecordedRequest, reply: DeliverReply) -> None:
        raise AssertionError("the chat connector calls no provider API")

    # -- outbound, in chat terms -----------------------------------------------------------

    async def test_outbound_reply_is_delivered_and_recorded(self, harness: Harness) -> None:
        reply = await self._send_reply(harness)
        outcome = await self._outcome(harness, reply)
        assert isinstance(outcome, MessageSent), f"expected MessageSent, got {outcome!r}"
        connector = harness.connector
        assert isinstance(connector, WebChatConnector)
        [frame] = await connector.history.read(ADDRESS, 0)  # in the stream RD_CHAT
        assert (frame.kind, frame.key, frame.text) == ("reply", reply.reply_id, reply.text)
        assert outcome.provider_message_id == f"{connector.history.epoch}-{frame.seq}"
        assert harness.fake.requests == []

    async def test_outbound_reply_with_a_file(self, harness: Harness) -> None:
        # Chat sends a file as a link line in the reply (the widget makes it a link), not to a provider.
        file = Attachment(url="https://relay.test/v1/files/tok?sig=abc", content_type="image/png", name="receipt.png")
        reply = msgspec.structs.replace(self.outbound_reply(), attachments=(file,))
        await harness.nc.jetstream().publish(
            subjects.outbound(reply.channel), encode(reply), headers={"Nats-Msg-Id": reply.reply_id}
        )
        outcome = await self._outcome(harness, reply)
        assert isinstance(outcome, MessageSent), f"a reply with a file was not sent: {outcome!r}"
        connector = harness.connector
        assert isinstance(connector, WebChatConnector)
        [frame] = await connector.history.read(ADDRESS, 0)
        assert (
            frame.text.startswith(reply.text)
            and "📎 receipt.png: https://relay.test/v1/files/tok?sig=abc" in frame.text
        )
        assert harness.fake.requests == []

    async def test_outbound_transient_failure_is_retried(self, harness: Harness) -> None:
        pytest.skip("chat delivery calls no remote provider: there is no transient provider failure to retry")

    async def test_outbound_retry_after_is_honoured(self, harness: Harness) -> None:
        pytest.skip("chat delivery calls no remote provider: nothing answers Retry-After")

    async def test_outbound_rejection_is_delivery_failed(self, harness: Harness) -> None:
        reply = msgspec.structs.replace(self.outbound_reply(), contact="+15550001111")
        js = harness.nc.jetstream()
        await js.publish(subjects.outbound("chat"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
        outcome = await self._outcome(harness, reply)
        assert isinstance(outcome, DeliveryFailed) and outcome.reason == "contact is not a web chat address"
        assert harness.runtime.metrics["delivery_retries"] == 0

    async def test_a_resolved_notice_is_shown_only_where_declared(self, harness: Harness) -> None:
        # Shown as one ``closed`` frame in the visitor's history, not a provider request.
        reply = msgspec.structs.replace(self.outbound_reply(), text="", notice="resolved")
        js = harness.nc.jetstream()
        await js.publish(subjects.outbound("chat"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
        connector = harness.connector
        assert isinstance(connector, WebChatConnector)
        async with asyncio.timeout(10):
            while not (frames := await connector.history.read(ADDRESS, 0)):
                await asyncio.sleep(0.05)
        assert [(f.kind, f.key) for f in frames] == [("closed", reply.conversation_id)]
        assert await read_outcomes(js, "chat", reply.reply_id) == [] and harness.fake.requests == []

    # -- sessions: the other HTTP entry ---------------------------------------------------

    async def test_sessions_refuse_bad_key_origin_and_malformed(self, harness: Harness) -> None:
        url = harness.base_url
        assert (await open_session(url, widget_key="nope"))[0] == 403
        assert (await open_session(url, origin="https://elsewhere.example"))[0] == 403
        async with (
            aiohttp.ClientSession() as http,
            http.post(url + "/sessions", data=b"{not json", headers={"Origin": url}) as resp,
        ):
            assert resp.status == 400 and "error" in await resp.json()
        # Nested deeper than the JSON parser goes, and a deflate body that does not inflate.
        for body, headers in ((b'{"a":' * 10000, {}), (b"garbage", {"Content-Encoding": "deflate"})):
            async with (
                aiohttp.ClientSession() as http,
                http.post(url + "/sessions", data=body, headers={"Origin": url, **headers}) as resp,
            ):
                assert resp.status == 400 and "error" in await resp.json(), body[:20]
        assert await harness.published() == []
