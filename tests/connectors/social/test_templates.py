"""WhatsApp template messages (issue 13): the Cloud API ``type: "template"`` message and
Twilio's Content API (``ContentSid`` + ``ContentVariables``), each against a local fake built
from the provider's documented request and answer; and the templates' config rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from connectors.sdk.conformance import FakeProvider
from connectors.sms.connector import TwilioSmsConnector
from connectors.social.connector import MetaConnector
from events.model import DeliverReply, TemplateMessage
from services.api.templates import TemplateRefused, TemplateSettings, choose

from .payloads import ACCESS_TOKEN, PHONE_NUMBER_ID

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ORDER_UPDATE = TemplateSettings(
    name="order_update",
    language="en_US",
    parameters=("customer", "order"),
    content_sid="HX" + "b" * 32,
    body="Hi {{1}}, your order {{2}} has shipped.",
)


def template_reply(contact: str, values: list[str], **metadata: str) -> DeliverReply:
    chosen = choose((ORDER_UPDATE,), "order_update", dict(zip(ORDER_UPDATE.parameters, values, strict=True)))
    return DeliverReply(
        conversation_id="conv1",
        customer_id="cus1",
        channel="social",
        reply_id="rep1",
        contact=contact,
        text=chosen.preview,
        metadata=metadata,
        template=chosen.message,
        template_values=chosen.values_json,
    )


@pytest.fixture
async def graph() -> AsyncIterator[FakeProvider]:
    async def ok(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return web.json_response(
            {"messaging_product": "whatsapp", "contacts": [{"wa_id": body["to"]}], "messages": [{"id": "wamid.T1"}]}
        )

    fake = FakeProvider(handler=ok)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def meta(graph: FakeProvider) -> AsyncIterator[MetaConnector]:
    c = MetaConnector.from_config({"access_token": ACCESS_TOKEN, "graph_base_url": graph.url + "/"})
    c.clock = lambda: NOW
    await c.open_http()
    try:
        yield c
    finally:
        await c.close_http()


async def test_a_template_goes_out_of_the_window_as_a_cloud_api_template_message(
    meta: MetaConnector, graph: FakeProvider
) -> None:
    three_days_ago = (NOW - timedelta(days=3)).isoformat()
    result = await meta.deliver(
        template_reply(
            "15551230003",
            ["Ann", "A-1042"],
            platform="whatsapp",
            phone_number_id=PHONE_NUMBER_ID,
            last_customer_message_at=three_days_ago,
        )
    )
    assert result.ok and result.provider_message_id == "wamid.T1"
    request = graph.requests[0]
    assert request.path.endswith(f"/{PHONE_NUMBER_ID}/messages")
    assert json.loads(request.body) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "15551230003",
        "type": "template",
        "template": {
            "name": "order_update",
            "language": {"code": "en_US"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-1042"}]}
            ],
        },
    }


async def test_free_text_out_of_the_window_still_fails_naming_templates(meta: MetaConnector) -> None:
    reply = DeliverReply(
        conversation_id="conv1",
        customer_id="cus1",
        channel="social",
        reply_id="rep2",
        contact="15551230003",
        text="hello again",
        metadata={"platform": "whatsapp", "phone_number_id": PHONE_NUMBER_ID, "last_customer_message_at": "2026-11-01"},
    )
    result = await meta.deliver(reply)
    assert not result.ok and "template" in result.reason


async def test_a_template_to_messenger_or_with_unreadable_values_is_refused(
    meta: MetaConnector, graph: FakeProvider
) -> None:
    messenger = template_reply("PSID_1", ["Ann", "A-1"], platform="messenger", page_id="PAGE_1")
    assert "WhatsApp" in (await meta.deliver(messenger)).reason
    erased = template_reply("15551230003", ["Ann", "A-1"], platform="whatsapp", phone_number_id=PHONE_NUMBER_ID)
    erased = DeliverReply(**{**_fields(erased), "template_values": "[erased]"})
    result = await meta.deliver(erased)
    assert not result.ok and "unreadable" in result.reason
    assert graph.requests == []


# --- Twilio: WhatsApp templates through the Content API ---------------------------------------


@pytest.fixture
async def twilio() -> AsyncIterator[FakeProvider]:
    async def created(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"sid": "MM" + "c" * 32, "status": "queued"}, status=201)

    fake = FakeProvider(handler=created)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_through_twilio_a_template_is_its_content_sid_and_variables(twilio: FakeProvider) -> None:
    c = TwilioSmsConnector.from_config(
        {"auth_token": "tok", "account_sid": "AC" + "d" * 32, "api_base_url": twilio.url + "/"}
    )
    await c.open_http()
    try:
        reply = template_reply("whatsapp:+15551230003", ["Ann", "A-1042"], platform="whatsapp")
        reply = DeliverReply(**{**_fields(reply), "channel": "sms", "metadata": {"from": "whatsapp:+14155238886"}})
        result = await c.deliver(reply)
        no_sid = DeliverReply(
            **{**_fields(reply), "template": TemplateMessage(name="order_update", parameters=("customer", "order"))}
        )
        refused = await c.deliver(no_sid)
        sms = DeliverReply(**{**_fields(reply), "contact": "+15551230003", "metadata": {"from": "+15550001111"}})
        as_sms = await c.deliver(sms)
    finally:
        await c.close_http()
    assert result.ok
    form = {k: v[0] for k, v in parse_qs(twilio.requests[0].body.decode()).items()}
    assert form == {
        "To": "whatsapp:+15551230003",
        "From": "whatsapp:+14155238886",
        "ContentSid": "HX" + "b" * 32,
        "ContentVariables": json.dumps({"1": "Ann", "2": "A-1042"}),
    }
    assert not refused.ok and "content_sid" in refused.reason
    assert not as_sms.ok and "WhatsApp" in as_sms.reason
    assert len(twilio.requests) == 1


# --- the config's rules -------------------------------------------------------------------------


def test_unknown_templates_and_missing_or_extra_parameters_are_named() -> None:
    with pytest.raises(TemplateRefused, match="unknown template 'welcome'"):
        choose((ORDER_UPDATE,), "welcome", {})
    with pytest.raises(TemplateRefused, match="needs parameter 'order'"):
        choose((ORDER_UPDATE,), "order_update", {"customer": "Ann"})
    with pytest.raises(TemplateRefused, match="has no parameter 'colour'"):
        choose((ORDER_UPDATE,), "order_update", {"customer": "Ann", "order": "1", "colour": "red"})
    chosen = choose((ORDER_UPDATE,), "order_update", {"order": "A-1\n2", "customer": "Ann"})
    assert chosen.values == ("Ann", "A-1 2")  # in the template's order; WhatsApp refuses newlines
    assert chosen.preview == "Hi Ann, your order A-1 2 has shipped."


def _fields(reply: DeliverReply) -> dict[str, Any]:
    return {f: getattr(reply, f) for f in reply.__struct_fields__}
