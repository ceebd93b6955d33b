"""Outbound-first (issue 13): an agent starts a conversation; the first message goes out
through the channel's connector to a fake provider, the conversation stays hers (the router
never offers it), and the customer's answer continues it. Real nats-server, every service."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import smtplib
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from events.model import (
    AgentOffered,
    ConversationAssigned,
    ConversationOpened,
    MessageReceived,
    MessageSent,
    ReplyRequested,
)
from events.store import StoredEvent
from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.fake_graph import FakeGraph, fake_graph_server
from tests.integration.fake_twilio import OUR_NUMBER, FakeTwilio, with_fake_twilio
from tests.integration.system import API_TOKEN, System, eventually, running_system, system_config

pytestmark = pytest.mark.integration

META_SECRET = "meta-app-secret"
PHONE_NUMBER_ID = "106540352242922"


async def call(
    system: System, method: str, path: str, token: str, body: dict[str, Any] | None = None, **headers: str
) -> tuple[int, Any, Any]:
    async with system.http.request(
        method, system.api + path, json=body, headers={"Authorization": f"Bearer {token}", **headers}
    ) as r:
        return r.status, await r.json(), r.headers


async def agent_token(system: System, agent_id: str) -> str:
    status, body = await system.post(f"/v1/agents/{agent_id}/tokens", {"label": "outbound test"})
    assert status == 201, body
    return str(body["token"])


def of_type(events: list[StoredEvent], kind: type) -> list[Any]:
    return [s.event for s in events if isinstance(s.event, kind)]


async def test_an_agent_texts_a_new_number_first_and_the_answer_continues_her_conversation(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    phone = "+15551230001"
    async with running_system(config, clean_nats) as system:
        token = await agent_token(system, "ava")
        start = {"address": f"sms:{phone}", "text": "Your repair is ready for pick-up."}
        status, body, _ = await call(system, "POST", "/v1/conversations", token, start, **{"Idempotency-Key": "k-1"})
        assert status == 201, body
        cid, customer_id = body["conversation"]["id"], body["customer_id"]
        assert body["customer_created"] is True
        assert (body["conversation"]["status"], body["conversation"]["agent_id"]) == ("assigned", "ava")

        # A retry (the answer was lost on the way) starts nothing new and sends nothing again.
        status, again, headers = await call(
            system, "POST", "/v1/conversations", token, start, **{"Idempotency-Key": "k-1"}
        )
        assert status == 201 and again["conversation"]["id"] == cid
        assert headers.get("Idempotent-Replayed") == "true"

        await eventually(lambda: _at_least(fake.messages, 1))
        assert fake.messages[0] == {"To": phone, "From": OUR_NUMBER, "Body": "Your repair is ready for pick-up."}
        await eventually(lambda: _has(system, customer_id, MessageSent))

        # The customer answers: same conversation, still Ava's, never offered to anyone.
        assert await system.send_sms("SM" + "7" * 32, phone, "Great, I'll come by at 5") == 200
        await eventually(lambda: _has(system, customer_id, MessageReceived))
        status, conv, _ = await call(system, "GET", f"/v1/conversations/{cid}", token)
        assert status == 200, conv
        assert (conv["status"], conv["agent_id"]) == ("assigned", "ava")

        # And her next reply goes to the number the customer wrote from.
        status, body, _ = await call(system, "POST", f"/v1/conversations/{cid}/reply", token, {"text": "See you!"})
        assert status == 202, body
        await eventually(lambda: _at_least(fake.messages, 2))
        await asyncio.sleep(0)
        events = await system.customer_log(customer_id)
    assert [(m["To"], m["Body"]) for m in fake.messages] == [
        (phone, "Your repair is ready for pick-up."),
        (phone, "See you!"),
    ]
    opened = of_type(events, ConversationOpened)
    assert len(opened) == 1 and opened[0].initiated_by == "agent:ava"
    assert {e.conversation_id for e in of_type(events, MessageReceived)} == {cid}
    assert [e.agent_id for e in of_type(events, ConversationAssigned)] == ["ava"]
    assert of_type(events, AgentOffered) == []
    assert len(of_type(events, ReplyRequested)) == 2


async def test_who_may_start_a_conversation_and_for_whom(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    async with running_system(config, clean_nats) as system:
        token = await agent_token(system, "ava")
        first = {"address": "sms:+15551230002", "text": "hello"}
        status, body, _ = await call(system, "POST", "/v1/conversations", token, {**first, "agent_id": "bruno"})
        assert status == 403, body  # an agent starts conversations for herself only
        status, body = await system.post("/v1/conversations", first)
        assert status == 400 and "agent_id" in body["error"]  # the operator names the agent
        status, body = await system.post("/v1/conversations", {**first, "agent_id": "bruno"})
        assert status == 201, body
        assert body["conversation"]["agent_id"] == "bruno"
        # A second start while that conversation is open: answer in it instead.
        status, again = await system.post("/v1/conversations", {**first, "agent_id": "bruno"})
        assert status == 409 and again["conversation_id"] == body["conversation"]["id"]
        # Ava never served this customer: writing first would make her a holder, who reads the
        # whole history. Refused, by address or by id, and nothing said of its conversations.
        for target in (first, {"customer_id": body["customer_id"], "channel": "sms", "text": "hi"}):
            status, refused, _ = await call(system, "POST", "/v1/conversations", token, target)
            assert status == 403 and refused["error"].startswith("an agent starts conversations with new"), refused
            assert "conversation_id" not in refused
        status, _, _ = await call(system, "GET", f"/v1/customers/{body['customer_id']}/timeline", token)
        assert status == 403
        status, bad = await system.post("/v1/conversations", {"address": "fax:123", "text": "x", "agent_id": "ava"})
        assert status == 400 and "sms:" in bad["error"]
        # By customer id: the customer's phone on the channel named.
        status, by_id = await system.post(
            "/v1/conversations",
            {"customer_id": body["customer_id"], "channel": "email", "text": "x", "agent_id": "ava"},
        )
        assert status == 409 and "no address for email" in by_id["error"]
        await eventually(lambda: _at_least(fake.messages, 1))


class MailSink:
    """An SMTP server that keeps what it is handed (the provider side of email replies)."""

    def __init__(self) -> None:
        self.mail: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def _smtp_send(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(message)


async def test_an_agent_emails_a_customer_first_and_the_answer_joins_the_thread(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    from aiosmtpd.controller import Controller

    sink = MailSink()
    sink_port, smtp_in = free_port(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink_port)
    controller.start()
    config = system_config(tmp_path, clean_nats.url)
    config.connectors["email"] = {
        "port": free_port(),
        "smtp_port": smtp_in,
        "domains": ["support.example.com"],
        "send_host": "127.0.0.1",
        "send_port": sink_port,
        "send_starttls": False,
        "from_address": "help@support.example.com",
    }
    try:
        async with running_system(config, clean_nats) as system:
            token = await agent_token(system, "ava")
            start = {"address": "email:ann@example.com", "subject": "Your refund", "text": "We refunded you."}
            status, body, _ = await call(system, "POST", "/v1/conversations", token, start)
            assert status == 201, body
            cid, customer_id = body["conversation"]["id"], body["customer_id"]
            await eventually(lambda: _at_least(sink.mail, 1))
            sent = email.message_from_bytes(sink.mail[0][2], policy=email.policy.default)
            answer = EmailMessage()
            answer["From"] = "Ann <ann@example.com>"
            answer["To"] = "help@support.example.com"
            answer["Subject"] = "Re: " + str(sent["Subject"])
            answer["Message-ID"] = "<ann-answer-1@example.com>"
            answer["In-Reply-To"] = str(sent["Message-ID"])
            answer["References"] = str(sent["Message-ID"])
            answer.set_content("Thank you, received it.")
            await eventually(lambda: _has(system, customer_id, MessageSent))
            await asyncio.to_thread(_smtp_send, smtp_in, answer)
            await eventually(lambda: _has(system, customer_id, MessageReceived))
            status, conv, _ = await call(system, "GET", f"/v1/conversations/{cid}", token)
            events = await system.customer_log(customer_id)
    finally:
        controller.stop()
    assert sink.mail[0][1] == ["ann@example.com"]
    assert "Your refund" in str(sent["Subject"])
    assert "We refunded you." in sent.get_body(preferencelist=("plain",)).get_content()
    assert (conv["status"], conv["agent_id"]) == ("assigned", "ava")
    assert {e.conversation_id for e in of_type(events, MessageReceived)} == {cid}
    assert len(of_type(events, ConversationOpened)) == 1


# --- WhatsApp (Cloud API) and Messenger: the providers' windows ------------------------------


@pytest.fixture
async def fake_graph() -> AsyncIterator[tuple[FakeGraph, str]]:
    async with fake_graph_server() as found:
        yield found


def whatsapp_inbound(wa_id: str, wamid: str, text: str) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": wa_id}],
        "messages": [
            {"from": wa_id, "id": wamid, "timestamp": str(int(time.time())), "type": "text", "text": {"body": text}}
        ],
    }
    entry = {"id": "WABA_ID", "changes": [{"field": "messages", "value": value}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


async def post_meta(http: aiohttp.ClientSession, url: str, raw: bytes) -> int:
    sig = "sha256=" + hmac.new(META_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": sig, "Content-Type": "application/json"}
    async with http.post(url, data=raw, headers=headers) as r:
        return r.status


TEMPLATES = [
    {
        "name": "order_update",
        "language": "en_US",
        "parameters": ["customer", "order"],
        "content_sid": "HX" + "b" * 32,
        "body": "Hi {{1}}, your order {{2}} has shipped.",
    }
]


async def test_whatsapp_first_contact_needs_a_template_and_messenger_needs_the_customer_first(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_graph: tuple[FakeGraph, str]
) -> None:
    graph, graph_url = fake_graph
    config = system_config(tmp_path, clean_nats.url)
    social_port = free_port()
    config.connectors["social"] = {
        "port": social_port,
        "app_secret": META_SECRET,
        "access_token": "EAAG-test",
        "phone_number_id": PHONE_NUMBER_ID,
        "graph_base_url": graph_url,
    }
    config.templates = tuple(_template(t) for t in TEMPLATES)
    async with running_system(config, clean_nats) as system:
        token = await agent_token(system, "ava")
        free_text = {"address": "whatsapp:+15551230003", "text": "hi there"}
        status, body, _ = await call(system, "POST", "/v1/conversations", token, free_text)
        assert status == 409, body
        assert "template" in body["error"] and body["templates"] == ["order_update"]

        status, body, _ = await call(
            system,
            "POST",
            "/v1/conversations",
            token,
            {"address": "whatsapp:+15551230003", "template": "order_update", "parameters": {"customer": "Ann"}},
        )
        assert status == 400 and "'order'" in body["error"]  # the missing parameter, named

        start = {
            "address": "whatsapp:+15551230003",
            "template": "order_update",
            "parameters": {"customer": "Ann", "order": "A-1042"},
        }
        status, body, _ = await call(system, "POST", "/v1/conversations", token, start)
        assert status == 201, body
        cid, customer_id = body["conversation"]["id"], body["customer_id"]
        assert body["conversation"]["channel"] == "social"
        await eventually(lambda: _at_least(graph.sent, 1))

        # The customer answers on WhatsApp: the same conversation; now free text may go.
        url = f"http://127.0.0.1:{social_port}/meta/webhook"
        assert await post_meta(system.http, url, whatsapp_inbound("15551230003", "wamid.IN1", "thanks!")) == 200
        await eventually(lambda: _has(system, customer_id, MessageReceived))
        status, body, _ = await call(
            system, "POST", f"/v1/conversations/{cid}/reply", token, {"text": "You're welcome"}
        )
        assert status == 202, body
        await eventually(lambda: _at_least(graph.sent, 2))
        # A template as a reply in the conversation; an unknown one is refused, named.
        status, listed, _ = await call(system, "GET", "/v1/templates", token)
        assert status == 200 and [t["name"] for t in listed["templates"]] == ["order_update"]
        path = f"/v1/conversations/{cid}/reply"
        status, body, _ = await call(system, "POST", path, token, {"template": "nope"})
        assert status == 400 and "'nope'" in body["error"]
        again = {"template": "order_update", "parameters": {"customer": "Ann", "order": "A-2"}}
        status, body, _ = await call(system, "POST", path, token, again)
        assert status == 202, body
        await eventually(lambda: _at_least(graph.sent, 3))

        # Messenger: a business may not write to someone who never wrote.
        status, body, _ = await call(
            system, "POST", "/v1/conversations", token, {"address": "messenger:PSID_NEW", "text": "hello"}
        )
        assert status == 409 and "messenger" in body["error"], body
        # A template in an SMS conversation is refused, not sent as its preview in plain text
        # (found by an integrator: a connector without templates was handed one).
        sms = {"address": "sms:+15551230004", "text": "Your parcel is here"}
        status, body, _ = await call(system, "POST", "/v1/conversations", token, sms)
        assert status == 201, body
        sms_reply = f"/v1/conversations/{body['conversation']['id']}/reply"
        status, body, _ = await call(system, "POST", sms_reply, token, again)
        assert (status, body["error"]) == (
            400,
            "templates are WhatsApp messages; this conversation's replies go out on sms",
        )
        events = await system.customer_log(customer_id)
    node, template_message = graph.sent[0]
    assert node == PHONE_NUMBER_ID
    assert template_message == {
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
    assert graph.sent[1][1]["text"] == {"body": "You're welcome"}
    assert graph.sent[2][1]["template"]["components"][0]["parameters"][1] == {"type": "text", "text": "A-2"}
    previews = [e.text for e in of_type(events, ReplyRequested)]
    assert len(previews) == 3 and all(p.startswith("rdenc") for p in previews)  # sealed like any reply text
    values = [e.template_values for e in of_type(events, ReplyRequested) if e.template is not None]
    assert len(values) == 2 and all(v.startswith("rdenc") for v in values)  # "Ann" is personal data
    assert {e.conversation_id for e in of_type(events, MessageReceived)} == {cid}


def _template(raw: dict[str, Any]) -> Any:
    import msgspec

    from services.api.templates import TemplateSettings

    return msgspec.convert(raw, TemplateSettings)


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _has(system: System, customer_id: str, kind: type) -> bool:
    return bool(of_type(await system.customer_log(customer_id), kind))


def test_the_router_leaves_a_conversation_opened_already_assigned_to_its_agent() -> None:
    """Pure: opened and assigned by the API (outbound-first), then the customer's answer asks
    for routing; with another agent free and the starter offline, nobody is offered it."""
    from events.model import DecisionReason, Requirements, RoutingRequested
    from tests.unit.router.helpers import Log, agent, at

    log = Log()
    log.extend(agent("ava", status="offline"))
    log.extend(agent("bruno"))
    opened = dict(customer_id="cu-1", conversation_id="cv-1")
    log.append(ConversationOpened(at=at(1), channel="sms", contact="+15551230009", initiated_by="agent:ava", **opened))
    log.append(
        ConversationAssigned(
            at=at(1), agent_id="ava", channel="sms", reason=DecisionReason(rule="outbound_first"), **opened
        )
    )
    assert log.step(at(2)) == []
    log.append(RoutingRequested(at=at(60), channel="sms", requirements=Requirements(skills={"billing": 1}), **opened))
    assert log.step(at(61)) == []
    assert log.step(at(3600)) == []
    view = log.state.conversations["cv-1"]
    assert (view.status, view.agent_id) == ("assigned", "ava")
    assert log.state.agents["ava"].load == {"sms": 1}
    assert log.replay().conversations["cv-1"].agent_id == "ava"  # a replay gives the same


async def test_an_agent_writes_first_on_a_plugin_channel_by_address_and_by_customer(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    """Found by an integrator: on a channel of a connector made with the SDK, an agent could
    not write first; the refusals named other kinds and said the customer had no address."""
    config = system_config(tmp_path, clean_nats.url)
    config.connectors["telegram"] = {"enabled": False}  # its table: the channel is known (run elsewhere)
    async with running_system(config, clean_nats) as system:
        token = await agent_token(system, "ava")
        start = {"address": "telegram:4242", "text": "Your order shipped."}
        status, body, _ = await call(system, "POST", "/v1/conversations", token, start)
        assert status == 201, body
        assert body["conversation"]["channel"] == "telegram"
        customer_id = body["customer_id"]
        path = f"/v1/conversations/{body['conversation']['id']}/resolve"
        assert (await call(system, "POST", path, token, {}))[0] == 200
        again = {"customer_id": customer_id, "channel": "telegram", "text": "One more thing."}
        status, body, _ = await call(system, "POST", "/v1/conversations", token, again)
        assert status == 201, body
        status, body, _ = await call(system, "POST", "/v1/conversations", token, {**again, "channel": "telegran"})
        assert (status, body["error"]) == (400, "unknown channel 'telegran'"), body
        status, body, _ = await call(system, "POST", "/v1/conversations", token, {"address": "fax:1", "text": "x"})
        assert status == 400 and "telegram:…" in body["error"], body
        events = await system.customer_log(customer_id)
    replies = of_type(events, ReplyRequested)
    assert [r.channel for r in replies] == ["telegram", "telegram"]  # (their text is sealed)


async def test_starts_at_once_to_one_customer_open_one_conversation(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    """Found by a burst audit: 20 starts at once (each with its own Idempotency-Key) opened 20
    conversations and sent 20 SMS; each had checked only the API's view for an open one."""
    _, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    async with running_system(config, clean_nats) as system:

        async def start(i: int) -> tuple[int, Any]:
            body = {"address": "sms:+15551230077", "text": f"Start {i}", "agent_id": "ava"}
            status, answer, _ = await call(
                system, "POST", "/v1/conversations", API_TOKEN, body, **{"Idempotency-Key": f"k{i}"}
            )
            return status, answer

        answers = await asyncio.gather(*(start(i) for i in range(8)))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [201] + [409] * 7, answers
        [opened] = [answer for status, answer in answers if status == 201]
        events = await system.customer_log(opened["customer_id"])
    assert len(of_type(events, ConversationOpened)) == 1
    assert len(of_type(events, ReplyRequested)) == 1
