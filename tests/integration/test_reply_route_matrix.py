"""Issue 13: a reply goes to the address, platform and number the customer last wrote from.

Every case runs the whole system over a real nats-server; customers write through the real
Twilio webhook (SMS and WhatsApp through Twilio) and the real SMTP server, and operators link
and merge through the API. Each case asserts the ``DeliverReply`` queued on ``rd.out.<channel>``
(channel, contact, metadata) and, for Twilio, what the SMS connector sent (``To``, ``From``).
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from events.codec import decode_reply
from events.model import ConversationOpened, DeliverReply, MessageReceived, ReplyRequested
from events.store import EventStore
from services.api.reply_routing import route_of
from services.bootstrap import event_store
from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.fake_twilio import FakeTwilio, with_fake_twilio
from tests.integration.system import System, eventually, running_system, system_config

pytestmark = pytest.mark.integration

OUR_SMS = "+15557654321"
OUR_WHATSAPP = "whatsapp:+14155238886"
A = "+15550100001"  # the number the customer first writes from (WhatsApp)
B = "+15550100002"  # a second number of the same person (SMS)


@dataclass
class Rig:
    system: System
    store: EventStore
    twilio: FakeTwilio
    queued: list[DeliverReply]
    smtp_port: int

    async def sms(self, sid: str, sender: str, text: str, *, to: str = OUR_SMS) -> None:
        assert await self.system.send_sms(sid, sender, text, to=to) == 200

    async def customer(self, phone: str) -> str:
        return await eventually(lambda: self.system.customer(phone), timeout=20)

    async def open_conversation(self, customer_id: str) -> dict[str, Any]:
        return await eventually(lambda: self.system.conversation_of(customer_id), timeout=20)

    async def received(self, customer_id: str, provider_message_id: str) -> MessageReceived:
        """The message once intake recorded it (on the customer's or a merged customer's subjects)."""

        async def probe() -> MessageReceived | None:
            for stored in await self.store.read_customer(customer_id):
                e = stored.event
                if isinstance(e, MessageReceived) and e.provider_message_id == provider_message_id:
                    return e
            return None

        return await eventually(probe, timeout=20)

    async def reply(self, conversation_id: str, text: str) -> DeliverReply:
        status, body = await self.system.post(f"/v1/conversations/{conversation_id}/reply", {"text": text})
        assert status == 202, body

        async def queued() -> DeliverReply | None:
            return next((d for d in self.queued if d.conversation_id == conversation_id and d.text == text), None)

        return await eventually(queued, timeout=20)

    async def sent_by_twilio(self, text: str) -> dict[str, str]:
        async def probe() -> dict[str, str] | None:
            return next((m for m in self.twilio.messages if m.get("Body") == text), None)

        return await eventually(probe, timeout=20)

    async def requested(self, customer_id: str, conversation_id: str, text: str) -> ReplyRequested:
        for stored in await self.store.read_customer(customer_id):
            e = stored.event
            if isinstance(e, ReplyRequested) and e.conversation_id == conversation_id and e.text == text:
                return e
        raise AssertionError(f"no ReplyRequested {text!r} in {conversation_id}")


@pytest.fixture
async def rig(tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str]) -> AsyncIterator[Rig]:
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    smtp_port = free_port()
    config.connectors["email"] = {
        "port": free_port(),
        "smtp_port": smtp_port,
        "domains": ["support.example.com"],
        "outbound": False,  # the DeliverReply itself is what these tests read
    }
    nc: NATS = await nats.connect(clean_nats.url)
    store = event_store(nc)  # opens what the services sealed
    queued: list[DeliverReply] = []

    async def on_outbound(msg: Msg) -> None:
        assert store.cipher is not None
        queued.append(await store.cipher.open_reply(decode_reply(msg.data)))

    # A core subscription sees every reply as it is queued, whoever consumes the work queue.
    sub = await nc.subscribe("rd.out.>", cb=on_outbound)
    try:
        async with running_system(config, clean_nats) as system:
            yield Rig(system, store, fake, queued, smtp_port)
    finally:
        await sub.unsubscribe()
        await nc.drain()


async def test_sms_after_whatsapp_from_the_same_number_is_answered_by_sms(rig: Rig) -> None:
    await rig.sms("SM" + "a1" * 16, "whatsapp:" + A, "my order is late", to=OUR_WHATSAPP)
    customer_id = await rig.customer(A)
    conv = await rig.open_conversation(customer_id)
    await rig.sms("SM" + "a2" * 16, A, "writing by SMS now")
    await rig.received(customer_id, "SM" + "a2" * 16)

    deliver = await rig.reply(conv["id"], "We are on it (SMS).")
    assert (deliver.channel, deliver.contact) == ("sms", A)
    assert deliver.metadata["platform"] == "sms" and deliver.metadata["from"] == OUR_SMS
    sent = await rig.sent_by_twilio("We are on it (SMS).")
    assert (sent["To"], sent["From"]) == (A, OUR_SMS)

    # And back: the customer answers on WhatsApp, the next reply goes by WhatsApp.
    await rig.sms("SM" + "a3" * 16, "whatsapp:" + A, "thanks, on WhatsApp again", to=OUR_WHATSAPP)
    await rig.received(customer_id, "SM" + "a3" * 16)
    deliver = await rig.reply(conv["id"], "Anything else (WhatsApp)?")
    assert (deliver.channel, deliver.contact) == ("sms", "whatsapp:" + A)
    assert deliver.metadata["platform"] == "whatsapp" and deliver.metadata["from"] == OUR_WHATSAPP
    sent = await rig.sent_by_twilio("Anything else (WhatsApp)?")
    assert (sent["To"], sent["From"]) == ("whatsapp:" + A, OUR_WHATSAPP)


async def test_sms_from_a_linked_number_is_answered_on_that_number(rig: Rig) -> None:
    await rig.sms("SM" + "b1" * 16, "whatsapp:" + A, "my order is late", to=OUR_WHATSAPP)
    customer_id = await rig.customer(A)
    conv = await rig.open_conversation(customer_id)
    status, body = await rig.system.post(f"/v1/customers/{customer_id}/identities", {"identity": f"sms:{B}"})
    assert status in (200, 201), body

    await rig.sms("SM" + "b2" * 16, B, "this is my other phone")
    joined = await rig.received(customer_id, "SM" + "b2" * 16)
    assert joined.conversation_id == conv["id"]  # the same conversation, not a new one

    deliver = await rig.reply(conv["id"], "Got it on your other phone.")
    assert (deliver.channel, deliver.contact) == ("sms", B)
    assert deliver.metadata["platform"] == "sms" and deliver.metadata["from"] == OUR_SMS
    sent = await rig.sent_by_twilio("Got it on your other phone.")
    assert (sent["To"], sent["From"]) == (B, OUR_SMS)  # not SMS to the WhatsApp number A
    requested = await rig.requested(customer_id, conv["id"], "Got it on your other phone.")
    assert requested.channel == "sms"


async def test_sms_from_a_merged_customers_number_is_answered_on_that_number(rig: Rig) -> None:
    # Someone wrote from B once; that conversation is over.
    await rig.sms("SM" + "c1" * 16, B, "hello from my second phone")
    other_id = await rig.customer(B)
    earlier = await rig.open_conversation(other_id)
    status, body = await rig.system.post(f"/v1/conversations/{earlier['id']}/resolve", {})
    assert status == 200, body

    # The same person opens a conversation on WhatsApp from A; an operator merges the two.
    await rig.sms("SM" + "c2" * 16, "whatsapp:" + A, "my order is late", to=OUR_WHATSAPP)
    customer_id = await rig.customer(A)
    conv = await rig.open_conversation(customer_id)
    status, body = await rig.system.post(f"/v1/customers/{customer_id}/merge", {"other": other_id})
    assert status == 200, body

    await rig.sms("SM" + "c3" * 16, B, "writing from the other phone")
    joined = await rig.received(customer_id, "SM" + "c3" * 16)
    assert joined.conversation_id == conv["id"]

    deliver = await rig.reply(conv["id"], "Merged and answered.")
    assert (deliver.channel, deliver.contact) == ("sms", B)
    assert deliver.metadata["platform"] == "sms" and deliver.metadata["from"] == OUR_SMS
    sent = await rig.sent_by_twilio("Merged and answered.")
    assert (sent["To"], sent["From"]) == (B, OUR_SMS)


async def test_mail_from_an_alias_is_answered_at_the_alias(rig: Rig) -> None:
    first = _mail("Ann <ann@example.com>", "help@support.example.com", "<first@example.com>", "Invoice")
    await asyncio.to_thread(_send_mail, rig.smtp_port, first)
    status, body = await eventually(lambda: _found(rig.system, "email:ann@example.com"), timeout=20)
    customer_id = body["customers"][0]["customer_id"]
    conv = await rig.open_conversation(customer_id)
    status, body = await rig.system.post(
        f"/v1/customers/{customer_id}/identities", {"identity": "email:ann.work@example.org"}
    )
    assert status in (200, 201), body

    # Her answer from her work address, in the same thread, to a second mailbox of ours.
    second = _mail("Ann <ann.work@example.org>", "billing@support.example.com", "<second@example.org>", "Re: Invoice")
    second["In-Reply-To"] = "<first@example.com>"
    second["References"] = "<first@example.com>"
    await asyncio.to_thread(_send_mail, rig.smtp_port, second)
    joined = await rig.received(customer_id, "second@example.org")
    assert joined.conversation_id == conv["id"]

    deliver = await rig.reply(conv["id"], "Answered at your work address.")
    assert (deliver.channel, deliver.contact) == ("email", "ann.work@example.org")
    assert deliver.metadata["recipients"] == "billing@support.example.com"
    assert deliver.thread_ref == "second@example.org"


def test_a_message_recorded_before_contact_existed_falls_back_to_the_opening() -> None:
    """Events written before ``MessageReceived.contact``: the opening's address, as before."""
    at = datetime(2026, 11, 1, tzinfo=UTC)
    opened = ConversationOpened(at=at, customer_id="cu1", conversation_id="cv1", channel="sms", contact=A)
    older = MessageReceived(
        at=at,
        customer_id="cu1",
        conversation_id="cv1",
        channel="sms",
        message_id="m1",
        provider_message_id="SM1",
        metadata={"platform": "sms", "from": OUR_SMS},
    )
    route = route_of(opened, older)
    assert (route.channel, route.contact, route.metadata["from"]) == ("sms", A, OUR_SMS)
    assert route_of(opened, None).contact == A


async def _found(system: System, identity: str) -> tuple[int, Any] | None:
    status, body = await system.get("/v1/customers", identity=identity)
    return (status, body) if status == 200 and body.get("customers") else None


def _mail(sender: str, to: str, message_id: str, subject: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = message_id
    mail.set_content("About my invoice.")
    return mail


def _send_mail(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(message)
