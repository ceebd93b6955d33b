"""The SMS connector passes the conformance kit, against a local fake of Twilio's Messages API."""

from __future__ import annotations

import base64
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode

from aiohttp import web
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from connectors.sdk.conformance import ConnectorConformance, RecordedRequest, SampleRequest
from connectors.sms.connector import TwilioSmsConnector
from events.model import DeliverReply

TOKEN = "conformance-token"
ACCOUNT = "AC" + "c" * 32
MESSAGE_SID = "SM" + "a" * 32
SENT_SID = "SM" + "b" * 32


def _signed(url: str, params: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(token).compute_signature(url, params),
    }


class TestSmsConformance(ConnectorConformance):
    connector_class = TwilioSmsConnector
    reply_contact: ClassVar[str] = "+15551230000"
    expected_sent_id: ClassVar[str | None] = SENT_SID
    supports_attachments: ClassVar[bool | None] = True  # MMS MediaUrl
    body_signed: ClassVar[bool | None] = True  # X-Twilio-Signature covers the URL and every parameter

    def config(self, provider_url: str) -> dict[str, Any]:
        return {
            "auth_token": TOKEN,
            "account_sid": ACCOUNT,
            "from_number": "+15559870000",
            "api_base_url": provider_url,
        }

    def _params(self) -> dict[str, str]:
        return {
            "MessageSid": MESSAGE_SID,
            "AccountSid": ACCOUNT,
            "From": "+15551230000",
            "To": "+15559870000",
            "Body": "My invoice is wrong",
            "NumMedia": "0",
        }

    def valid_request(self, base_url: str) -> SampleRequest:
        params = self._params()
        return SampleRequest(
            path="/twilio/sms",
            body=urlencode(params).encode(),
            headers=_signed(base_url + "/twilio/sms", params),
            expect={
                "provider_message_id": MESSAGE_SID,
                "sender": "+15551230000",
                "recipient": "+15559870000",
                "text": "My invoice is wrong",
            },
        )

    def duplicate_request(self, base_url: str) -> SampleRequest:
        # Twilio's retry may carry a parameter the first attempt did not: still one event.
        params = {**self._params(), "NumSegments": "1"}
        return SampleRequest(
            path="/twilio/sms",
            body=urlencode(params).encode(),
            headers=_signed(base_url + "/twilio/sms", params),
            expect={"provider_message_id": MESSAGE_SID},
        )

    def forged_request(self, base_url: str) -> SampleRequest:
        params = self._params()
        return SampleRequest(
            path="/twilio/sms",
            body=urlencode(params).encode(),
            headers=_signed(base_url + "/twilio/sms", params, token="guessed"),
        )

    def malformed_request(self, base_url: str) -> SampleRequest:
        params = {"AccountSid": ACCOUNT, "Body": "no sid, no sender"}
        return SampleRequest(
            path="/twilio/sms", body=urlencode(params).encode(), headers=_signed(base_url + "/twilio/sms", params)
        )

    async def provider_accepts(self, request: web.Request) -> web.StreamResponse:
        if request.path != f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json":
            return web.json_response({"code": 20404, "message": "not found", "status": 404}, status=404)
        return web.json_response({"sid": SENT_SID, "status": "queued"}, status=201)

    async def provider_rejects(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}, status=400
        )

    def check_delivered(self, request: RecordedRequest, reply: DeliverReply) -> None:
        assert request.method == "POST"
        assert request.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
        expected_auth = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        assert request.headers["Authorization"] == expected_auth
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        assert form == {"To": reply.contact, "From": "+15559870000", "Body": reply.text}
