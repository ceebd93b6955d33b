"""Agent notices by email are mail a machine wrote (RFC 5322 / RFC 3834): dated, with a
Message-ID, ``Auto-Submitted: auto-generated`` so no out-of-office answers each one, sent from
``smtp_from``; and automatic mail a customer's address sent (an out-of-office, a bounce) pings
no agent and is never shown as what the customer said."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime

from events.model import ConversationAssigned, ConversationOpened, DecisionReason, MessageReceived
from events.stored import StoredEvent
from services.delivery import render
from services.delivery.notices import Facts
from services.delivery.senders import Senders
from services.delivery.settings import DeliverySettings, Endpoint
from tests.connectors.email.helpers import SmtpSink

AT = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
SUBJECT = "rd.evt.c.cu1.cv1"
BODY = {"notice": "message", "conversation": {"id": "cv1", "channel": "email"}, "preview": "Hello"}


def test_a_notice_mail_is_dated_identified_and_marked_automatic() -> None:
    mail = render.email(BODY, sender="Relaydesk <relaydesk@Acme.test>", to="ava@acme.test", delivery_id="dl-4-x-ava")
    assert abs(parsedate_to_datetime(str(mail["Date"])) - datetime.now(UTC)) < timedelta(minutes=1)
    assert re.fullmatch(r"<rd\.notice\.[0-9a-f]{32}@acme\.test>", str(mail["Message-ID"]))
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["X-Auto-Response-Suppress"] == "All"
    assert mail["X-Relaydesk-Delivery"] == "dl-4-x-ava"
    # The same delivery tried again is the same mail (clients collapse it); another is not.
    again = render.email(BODY, sender="relaydesk@acme.test", to="ava@acme.test", delivery_id="dl-4-x-ava")
    other = render.email(BODY, sender="relaydesk@acme.test", to="ava@acme.test", delivery_id="dl-5-x-ava")
    assert again["Message-ID"] == mail["Message-ID"] != other["Message-ID"]


async def test_a_notice_is_sent_from_smtp_from_with_those_headers() -> None:
    sink = SmtpSink()
    port = await sink.start()
    try:
        settings = DeliverySettings(smtp_host="127.0.0.1", smtp_port=port, smtp_from="Relaydesk <relaydesk@acme.test>")
        senders = Senders(settings)
        try:
            outcome = await senders.send(Endpoint(kind="email", address="ava@acme.test"), "dl-1", BODY)
        finally:
            await senders.close()
        assert outcome.ok, outcome
        [got] = await sink.wait_for(1)
    finally:
        await sink.stop()
    assert (got.mail_from, got.rcpt_tos) == ("relaydesk@acme.test", ["ava@acme.test"])
    sent = message_from_bytes(got.data, policy=policy.default)
    for name in ("Date", "Message-ID", "Auto-Submitted", "X-Auto-Response-Suppress"):
        assert sent[name], name
    assert sent["Auto-Submitted"] == "auto-generated"


def received(seq: int, text: str, **metadata: str) -> StoredEvent:
    event = MessageReceived(
        at=AT,
        customer_id="cu1",
        conversation_id="cv1",
        channel="email",
        message_id=f"m{seq}",
        provider_message_id=f"p{seq}@customer.test",
        text=text,
        metadata=metadata,
    )
    return StoredEvent(seq, SUBJECT, event)


def test_an_out_of_office_pings_no_agent_and_keeps_the_customers_preview() -> None:
    facts = Facts(console_url="http://c", api_url="http://a")
    opened = ConversationOpened(at=AT, customer_id="cu1", conversation_id="cv1", channel="email", contact="b@x.test")
    assigned = ConversationAssigned(
        at=AT,
        customer_id="cu1",
        conversation_id="cv1",
        agent_id="ava",
        channel="email",
        reason=DecisionReason(rule="best_fit"),
    )
    facts.apply(StoredEvent(1, SUBJECT, opened))
    facts.apply(received(2, "My invoice is wrong.", subject="Invoice"))
    facts.apply(StoredEvent(3, SUBJECT, assigned))
    [message] = facts.apply(received(4, "Any news on my invoice?"))
    assert (message.kind, message.agent_id, message.body["preview"]) == ("message", "ava", "Any news on my invoice?")

    ooo = received(5, "I am out of the office until Monday.", auto="auto-reply", auto_reason="auto-submitted")
    assert facts.apply(ooo) == []
    bounce = received(6, "Delivery to the following recipient failed", auto="bounce")
    assert facts.apply(bounce) == []
    [later] = facts.apply(received(7, "Hello?"))
    assert later.body["preview"] == "Hello?"
    # A notice made after the out-of-office still quotes the customer.
    facts.apply(ooo)
    assert facts._notice("assigned", "ava", ooo, "cv1", "cu1").body["preview"] == "Hello?"
