"""The email connector passes the SDK's conformance kit.

The kit speaks HTTP. Inbound, the email connector has an HTTP door that fits it exactly:
``POST /email/inbound`` with the raw message, signed with ``X-Relaydesk-Signature`` (what an
MTA pipe or a relay posts). SMTP itself is covered by ``test_smtp_inbound.py``.
Outbound, the kit's fake provider is replaced by a local SMTP server (aiosmtpd) that behaves
like it: it records each message as a ``RecordedRequest``, answers ``451`` for ``fail_next``
tries, and ``550`` when the kit switches it to ``provider_rejects``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, ClassVar, cast

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from connectors.email.connector import ENVELOPE_TO_HEADER, SIGNATURE_HEADER, EmailConnector, sign
from connectors.sdk.conformance import ConnectorConformance, FakeProvider, Harness, RecordedRequest, SampleRequest
from events.model import DeliverReply

SECRET = "conformance-secret"
MESSAGE_ID = "conformance.1@customer.test"
RAW = (
    "From: Ann Example <ann@customer.test>\r\n"
    "To: support@support.test\r\n"
    "Subject: Invoice question\r\n"
    f"Message-ID: <{MESSAGE_ID}>\r\n"
    "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "My invoice is wrong.\r\n"
).encode()


@dataclass
class SmtpFakeProvider(FakeProvider):
    """The kit's FakeProvider, as an SMTP server."""

    _server: asyncio.base_events.Server | None = None
    port: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or b"")
        parsed = message_from_bytes(raw, policy=policy.default)
        self.requests.append(
            RecordedRequest(
                method="SMTP",
                path="/",
                query={"mail_from": envelope.mail_from or "", "rcpt_to": ",".join(envelope.rcpt_tos)},
                headers={k: str(v) for k, v in parsed.items()},
                body=raw,
            )
        )
        if self.fail_next > 0:
            self.fail_next -= 1
            return "451 4.3.0 temporarily unavailable (fake)"
        answer = await self.handler(cast(web.Request, None))
        if answer.status >= 500:
            return "451 4.3.0 fake provider error"
        if answer.status >= 400:
            return "550 5.7.1 rejected by the fake provider"
        return "250 OK"

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="fake.test", loop=loop), host=self.host, port=0
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.url = f"smtp://{self.host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None


class TestEmailConformance(ConnectorConformance):
    connector_class = EmailConnector
    reply_contact: ClassVar[str] = "ann@customer.test"
    body_signed: ClassVar[bool | None] = True  # X-Relaydesk-Signature: an HMAC of the raw MIME

    def config(self, provider_url: str) -> dict[str, Any]:
        host, _, port = provider_url.removeprefix("smtp://").rpartition(":")
        return {
            "http_secret": SECRET,
            "domains": ["support.test"],
            "smtp_port": 0,
            "max_body_bytes": 200_000,
            "send_host": host,
            "send_port": int(port),
            "from_address": "support@support.test",
        }

    def _signed(self, body: bytes, secret: str = SECRET) -> dict[str, str]:
        return {
            SIGNATURE_HEADER: sign(secret, body),
            ENVELOPE_TO_HEADER: "support@support.test",
            "Content-Type": "message/rfc822",
        }

    def valid_request(self, base_url: str) -> SampleRequest:
        return SampleRequest(
            "/email/inbound",
            RAW,
            self._signed(RAW),
            expect={
                "provider_message_id": MESSAGE_ID,
                "sender": "ann@customer.test",
                "sender_name": "Ann Example",
                "recipient": "support@support.test",
                "text": "My invoice is wrong.",
            },
        )

    def forged_request(self, base_url: str) -> SampleRequest:
        return SampleRequest("/email/inbound", RAW, self._signed(RAW, secret="guessed"))

    def malformed_request(self, base_url: str) -> SampleRequest:
        # A request the relay got wrong (no recipient of ours): 400. A *mail* that cannot be
        # parsed is never refused: it is kept and parked (test_unparseable_mail_is_parked_not_refused).
        headers = {**self._signed(RAW), ENVELOPE_TO_HEADER: "someone@elsewhere.test"}
        return SampleRequest("/email/inbound", RAW, headers)

    async def test_unparseable_mail_is_parked_not_refused(self, harness: Harness) -> None:
        body = b"this is not an email message"
        status, answer, _ = await harness.send(SampleRequest("/email/inbound", body, self._signed(body)))
        assert status == 200, answer
        assert json.loads(answer)["parked"].startswith("email.")
        assert await harness.published() == []

    async def provider_accepts(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    def check_delivered(self, request: RecordedRequest, reply: DeliverReply) -> None:
        assert request.method == "SMTP"
        assert request.query["rcpt_to"] == reply.contact
        assert request.query["mail_from"] == "support@support.test"
        msg = message_from_bytes(request.body, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        assert msg["To"] == reply.contact
        assert msg["From"] == "support@support.test"
        assert msg["Message-ID"] == f"<rd.{reply.reply_id}@support.test>"
        # "Re:" only on an answer to a customer's mail; the kit's reply answers none.
        assert msg["Subject"] == ("Re: Your request" if reply.thread_ref else "Your request")
        body = msg.get_body(preferencelist=("plain",))
        assert body is not None and body.get_content().strip() == reply.text

    def fake_provider(self) -> FakeProvider:
        return SmtpFakeProvider(handler=self.provider_accepts)

    async def test_outbound_retry_after_is_honoured(self, harness: Harness) -> None:
        pytest.skip("SMTP has no Retry-After: a 4xx reply is retried with the SDK's backoff")

    async def test_outbound_reply_with_a_file(self, harness: Harness) -> None:
        pytest.skip(
            "email fetches the file from its link and attaches the bytes, and this kit's provider is an SMTP fake "
            "with no link to serve: files in email replies are checked in tests/connectors/test_reply_files.py"
        )
