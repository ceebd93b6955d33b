"""The SMS connector's `deliver` against a local fake of Twilio's Messages API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import msgspec
import pytest
from aiohttp import web

from connectors.sdk.conformance import FakeProvider
from connectors.sms.connector import TwilioSmsConnector
from events.model import DeliverReply

ACCOUNT = "AC" + "d" * 32


def reply(**metadata: str) -> DeliverReply:
    return DeliverReply(
        conversation_id="conv1",
        customer_id="cus1",
        channel="sms",
        reply_id="rep1",
        contact="+15551230000",
        text="Your refund is on its way",
        metadata=metadata,
    )


@pytest.fixture
async def twilio() -> AsyncIterator[FakeProvider]:
    async def created(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"sid": "SM" + "e" * 32, "status": "queued"}, status=201)

    fake = FakeProvider(handler=created)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def connector(fake: FakeProvider, **settings: Any) -> TwilioSmsConnector:
    c = TwilioSmsConnector.from_config(
        {"auth_token": "tok", "account_sid": ACCOUNT, "api_base_url": fake.url + "/", **settings}
    )
    await c.open_http()
    return c


def form_of(fake: FakeProvider, i: int = 0) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(fake.requests[i].body.decode()).items()}


async def test_messaging_service_sid_is_used_when_set(twilio: FakeProvider) -> None:
    c = await connector(twilio, messaging_service_sid="MG" + "1" * 32, status_callback_url="https://x/status")
    try:
        result = await c.deliver(reply())
    finally:
        await c.close_http()
    assert result.ok and result.provider_message_id == "SM" + "e" * 32
    assert twilio.requests[0].path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert form_of(twilio) == {
        "To": "+15551230000",
        "Body": "Your refund is on its way",
        "MessagingServiceSid": "MG" + "1" * 32,
        # The reply it is about, named in the (signed) callback URL: a later "undelivered" is
        # reported as this reply's outcome (test_sms_inbound).
        "StatusCallback": "https://x/status?rd_reply=rep1&rd_customer=cus1&rd_conversation=conv1",
    }


async def test_reply_from_the_number_the_customer_wrote_to(twilio: FakeProvider) -> None:
    c = await connector(twilio, from_number="+15550000000", messaging_service_sid="MG" + "1" * 32)
    try:
        assert (await c.deliver(reply(**{"from": "+15559870000"}))).ok
    finally:
        await c.close_http()
    assert form_of(twilio)["From"] == "+15559870000"
    assert "MessagingServiceSid" not in form_of(twilio)


@pytest.mark.parametrize(
    ("contact", "metadata", "to", "sender"),
    [
        # the customer last wrote on WhatsApp to our WhatsApp sender
        (
            "+15551230000",
            {"platform": "whatsapp", "from": "whatsapp:+14155238886"},
            "whatsapp:+15551230000",
            "whatsapp:+14155238886",
        ),
        # a WhatsApp conversation recorded before "from" was kept: from_number, on WhatsApp
        ("whatsapp:+15551230000", {}, "whatsapp:+15551230000", "whatsapp:+15550000000"),
        # opened on WhatsApp, last message by SMS: plain numbers both ways
        ("whatsapp:+15551230000", {"platform": "sms", "from": "+15559870000"}, "+15551230000", "+15559870000"),
    ],
)
async def test_reply_goes_out_on_the_platform_of_the_last_message(
    twilio: FakeProvider, contact: str, metadata: dict[str, str], to: str, sender: str
) -> None:
    c = await connector(twilio, from_number="+15550000000")
    try:
        assert (await c.deliver(msgspec.structs.replace(reply(**metadata), contact=contact))).ok
    finally:
        await c.close_http()
    assert (form_of(twilio)["To"], form_of(twilio)["From"]) == (to, sender)


@pytest.mark.parametrize(
    ("status", "body", "retryable", "reason"),
    [
        (400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}, False, "21211"),
        (401, {"code": 20003, "message": "Authenticate", "status": 401}, False, "Authenticate"),
        (429, {"code": 20429, "message": "Too Many Requests", "status": 429}, True, "Too Many"),
        (500, None, True, "twilio 500"),
    ],
)
async def test_errors_carry_twilio_reason(
    twilio: FakeProvider, status: int, body: dict[str, Any] | None, retryable: bool, reason: str
) -> None:
    async def failing(_request: web.Request) -> web.StreamResponse:
        if body is None:
            return web.Response(status=status, text="upstream exploded")
        return web.json_response(body, status=status)

    twilio.handler = failing
    c = await connector(twilio, from_number="+15550000000")
    try:
        result = await c.deliver(reply())
    finally:
        await c.close_http()
    assert not result.ok
    assert result.retryable is retryable
    assert reason in result.reason


async def test_missing_outbound_settings_fail_clearly(twilio: FakeProvider) -> None:
    c = await connector(twilio)  # no from_number, no messaging_service_sid
    try:
        result = await c.deliver(reply())
        assert not result.ok and "from_number" in result.reason
        c.settings.account_sid = ""
        assert "account_sid" in (await c.deliver(reply())).reason
    finally:
        await c.close_http()
    assert twilio.requests == []


async def test_a_reply_over_twilios_limit_fails_without_calling_twilio(twilio: FakeProvider) -> None:
    """A helpdesk's reply reaches the connector unchecked (the API refuses an over-long one
    itself): failed with the limit and the length, as the console is told, not sent to be
    refused with Twilio's error 21617."""
    c = await connector(twilio, from_number="+15557654321")
    try:
        result = await c.deliver(msgspec.structs.replace(reply(), text="x" * 1601))
        fits = await c.deliver(msgspec.structs.replace(reply(), text="x" * 1600))
    finally:
        await c.close_http()
    assert not result.ok and not result.retryable
    assert "the reply is 1601 characters; SMS (Twilio) takes at most 1600" in result.reason
    assert fits.ok and len(twilio.requests) == 1
