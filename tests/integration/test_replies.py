"""Issue 6: an agent's reply through the API goes back out on the customer's own channel,
to local stand-ins for the providers: a fake Twilio Messages API and an SMTP sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from aiosmtpd.controller import Controller

from events.model import MessageSent, ReplyRequested
from events.store import Append, EventStore
from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.fake_twilio import OUR_NUMBER, FakeTwilio, with_fake_twilio
from tests.integration.system import System, accept_if_offered, eventually, running_system, system_config

pytestmark = pytest.mark.integration


class Sink:
    def __init__(self) -> None:
        self.mail: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


async def sms_conversation(system: System, sid: str, phone: str, to: str = OUR_NUMBER) -> tuple[str, dict[str, Any]]:
    """A customer's first SMS, routed and held by an agent: (customer id, conversation)."""
    assert await system.send_sms(sid, phone, "my invoice is wrong", to=to) == 200
    customer_id = await eventually(lambda: system.customer(phone))
    conv = await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer_id)))
    return customer_id, conv


async def reply(system: System, conversation: dict[str, Any], text: str) -> None:
    status, body = await system.post(f"/v1/conversations/{conversation['id']}/reply", {"text": text})
    assert status == 202, body


async def sent_for(system: System, customer_id: str) -> list[MessageSent]:
    return [e.event for e in await system.customer_log(customer_id) if isinstance(e.event, MessageSent)]


async def test_reply_to_an_sms_reaches_the_twilio_messages_api(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    async with running_system(config, clean_nats) as system:
        phone = "+15551239876"
        customer_id, conv = await sms_conversation(system, "SM" + "d" * 32, phone)
        await reply(system, conv, "Sorry about that, a refund is on its way.")
        await eventually(lambda: _count(fake.messages, 1))
        sent = await eventually(lambda: sent_for(system, customer_id))
    assert fake.messages == [{"To": phone, "From": OUR_NUMBER, "Body": "Sorry about that, a refund is on its way."}]
    assert fake.auth[0] is not None and fake.auth[0].startswith("Basic ")
    assert sent[0].provider_message_id.startswith("SM")


async def test_replies_go_back_on_the_platform_and_number_the_customer_last_wrote_to(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    """One Twilio account, two numbers: SMS on one, WhatsApp on the other. The customer (one
    phone, so one customer and one conversation) writes by SMS, then by WhatsApp, then by SMS
    again; each reply follows the last message."""
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    sms_line, whatsapp_line = "+15550001111", "whatsapp:+14155238886"
    async with running_system(config, clean_nats) as system:
        phone = "+15551239876"
        customer_id, conv = await sms_conversation(system, "SM" + "a" * 32, phone, to=sms_line)
        await reply(system, conv, "by sms")
        await eventually(lambda: _count(fake.messages, 1))

        assert await system.send_sms("SM" + "b" * 32, f"whatsapp:{phone}", "here on whatsapp", to=whatsapp_line) == 200
        await eventually(lambda: _messages_in(system, customer_id, 2))
        await reply(system, conv, "by whatsapp")
        await eventually(lambda: _count(fake.messages, 2))

        assert await system.send_sms("SM" + "c" * 32, phone, "back on sms", to=sms_line) == 200
        await eventually(lambda: _messages_in(system, customer_id, 3))
        await reply(system, conv, "sms again")
        await eventually(lambda: _count(fake.messages, 3))
        status, timeline = await system.get(f"/v1/customers/{customer_id}/timeline")
        assert status == 200, timeline
        platforms = [e["detail"].get("platform") for e in timeline["entries"] if e["kind"] == "message_in"]
        assert platforms == ["sms", "whatsapp", "sms"]  # one channel, and the timeline tells them apart
    assert [(m["To"], m["From"], m["Body"]) for m in fake.messages] == [
        (phone, sms_line, "by sms"),
        (f"whatsapp:{phone}", whatsapp_line, "by whatsapp"),
        (phone, sms_line, "sms again"),
    ]


async def _count(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _messages_in(system: System, customer_id: str, n: int) -> bool:
    """The customer's ``n``-th message is recorded (a reply must see it to follow it)."""
    status, body = await system.get(f"/v1/customers/{customer_id}/timeline")
    return status == 200 and sum(e["kind"] == "message_in" for e in body["entries"]) >= n


async def test_reply_to_an_email_is_threaded_under_the_customers_message(
    tmp_path: Path, clean_nats: EmbeddedNats, smtp_sink: tuple[Sink, int]
) -> None:
    sink, sink_port = smtp_sink
    smtp_in = free_port()
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
    async with running_system(config, clean_nats) as system:
        original = EmailMessage()
        original["From"] = "Ann <ann@example.com>"
        original["To"] = "help@support.example.com"
        original["Subject"] = "Charged twice"
        original["Message-ID"] = "<ann-1@example.com>"
        original.set_content("Hello, my invoice shows two charges.")
        await asyncio.to_thread(_send, smtp_in, original)

        async def customer() -> str | None:
            status, body = await system.get("/v1/customers", identity="email:ann@example.com")
            return body["customers"][0]["customer_id"] if status == 200 else None

        customer_id = await eventually(customer)
        conv = await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer_id)))
        await reply(system, conv, "We have refunded the second charge.")
        await eventually(lambda: _count(sink.mail, 1))
    mail_from, rcpt_tos, content = sink.mail[0]
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert mail_from == "help@support.example.com"
    assert rcpt_tos == ["ann@example.com"]
    assert message["In-Reply-To"] == "<ann-1@example.com>"
    assert "<ann-1@example.com>" in message["References"]
    assert message["Subject"] == "Re: Charged twice"
    assert "We have refunded the second charge." in message.get_body(preferencelist=("plain",)).get_content()


def _send(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(message)


async def test_a_reply_recorded_but_never_queued_still_goes_out_once(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    """The reply command writes twice (the log, then the outbound queue). A reply whose
    second write was lost (the API killed in between) is queued again from the log; a reply
    that did go out is not sent a second time."""
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    config.api = msgspec.structs.replace(config.api, reply_requeue_seconds=0.3)
    with_fake_twilio(config, base_url)
    async with running_system(config, clean_nats) as system:
        phone = "+15551230077"
        customer_id, conv = await sms_conversation(system, "SM" + "f" * 32, phone)
        await reply(system, conv, "first, through the API")
        await eventually(lambda: _count(fake.messages, 1))

        # What the API writes first, without the second write.
        nc = await nats.connect(clean_nats.url)
        try:
            lost = ReplyRequested(
                at=datetime.now(UTC),
                customer_id=customer_id,
                conversation_id=conv["id"],
                channel="sms",
                reply_id="rp_lost_" + "0" * 12,
                agent_id=conv["agent_id"],
                text="second, never queued",
                actor="operator",
            )
            await EventStore(nc, nc.jetstream()).append(Append(lost))
        finally:
            await nc.close()
        await eventually(lambda: _count(fake.messages, 2))
        sent = await eventually(lambda: _sent(system, customer_id, 2))
        await asyncio.sleep(1.5)  # several sweeps of the relay
    assert [m["Body"] for m in fake.messages] == ["first, through the API", "second, never queued"]
    assert sorted(e.reply_id for e in sent)[-1] == "rp_lost_" + "0" * 12


async def _sent(system: System, customer_id: str, n: int) -> list[MessageSent] | None:
    sent = await sent_for(system, customer_id)
    return sent if len(sent) >= n else None
