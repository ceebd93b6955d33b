"""Intake's plan: what a message from a customer adds to the log, from history alone."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from events.model import (
    ConversationOpened,
    ConversationResolved,
    CustomerCreated,
    InboundMessage,
    MessageReceived,
    RoutingRequested,
)
from events.store import StoredEvent
from services.intake.plan import Triage, fold_history, plan

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TRIAGE = Triage(identity="phone:+15551234567", language="en", skills={"billing": 1}, priority=0)


def sms(sid: str, text: str = "my invoice is wrong") -> InboundMessage:
    return InboundMessage(
        at=NOW, channel="sms", provider="twilio", provider_message_id=sid, sender="+15551234567", text=text
    )


def ids():  # type: ignore[no-untyped-def]
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}{next(counter)}"


def stored(events) -> list[StoredEvent]:  # type: ignore[no-untyped-def]
    return [StoredEvent(seq=i + 1, subject="rd.evt.c.x.y", event=e) for i, e in enumerate(events)]


def test_first_message_creates_customer_opens_conversation_and_requests_routing() -> None:
    events = plan(fold_history([]), "cu1", sms("SM1"), TRIAGE, NOW, ids())
    assert [type(e) for e in events] == [CustomerCreated, ConversationOpened, MessageReceived, RoutingRequested]
    routing = events[-1]
    assert isinstance(routing, RoutingRequested)
    assert routing.requirements.skills == {"billing": 1}
    assert routing.requirements.language == "en"


def test_second_message_continues_the_open_conversation() -> None:
    first = plan(fold_history([]), "cu1", sms("SM1"), TRIAGE, NOW, ids())
    second = plan(fold_history(stored(first)), "cu1", sms("SM2", "hello?"), TRIAGE, NOW, ids())
    assert [type(e) for e in second] == [MessageReceived]
    assert second[0].conversation_id == first[1].conversation_id  # type: ignore[union-attr]


def test_same_provider_message_twice_adds_nothing() -> None:
    first = plan(fold_history([]), "cu1", sms("SM1"), TRIAGE, NOW, ids())
    assert plan(fold_history(stored(first)), "cu1", sms("SM1"), TRIAGE, NOW, ids()) == []


def test_message_after_resolution_opens_a_new_conversation() -> None:
    make_id = ids()
    first = plan(fold_history([]), "cu1", sms("SM1"), TRIAGE, NOW, make_id)
    conv = first[1].conversation_id  # type: ignore[union-attr]
    resolved = ConversationResolved(at=NOW, customer_id="cu1", conversation_id=conv)
    again = plan(fold_history(stored([*first, resolved])), "cu1", sms("SM2"), TRIAGE, NOW, make_id)
    assert [type(e) for e in again] == [ConversationOpened, MessageReceived, RoutingRequested]
    assert again[0].conversation_id != conv  # type: ignore[union-attr]


def test_half_written_open_is_completed_with_its_routing_request() -> None:
    first = plan(fold_history([]), "cu1", sms("SM1"), TRIAGE, NOW, ids())
    crashed_after_message = first[:3]  # the routing request never made it
    retry = plan(fold_history(stored(crashed_after_message)), "cu1", sms("SM2"), TRIAGE, NOW, ids())
    assert [type(e) for e in retry] == [MessageReceived, RoutingRequested]


def test_email_does_not_continue_an_sms_conversation() -> None:
    first = plan(fold_history([]), "cu1", sms("SM1"), TRIAGE, NOW, ids())
    mail = InboundMessage(at=NOW, channel="email", provider="smtp", provider_message_id="<a@b>", sender="a@b.c")
    events = plan(fold_history(stored(first)), "cu1", mail, TRIAGE, NOW, ids())
    assert [type(e) for e in events] == [ConversationOpened, MessageReceived, RoutingRequested]


def mail(mid: str, *, thread_ref: str | None = None, **metadata: str) -> InboundMessage:
    return InboundMessage(
        at=NOW,
        channel="email",
        provider="smtp",
        provider_message_id=mid,
        sender="ann@example.com",
        text="hello",
        thread_ref=thread_ref,
        metadata=metadata,
    )


def test_email_reply_continues_its_thread_and_a_new_mail_opens_a_new_conversation() -> None:
    make_id = ids()
    first = plan(fold_history([]), "cu1", mail("<m1@x>"), TRIAGE, NOW, make_id)
    conv = first[1].conversation_id  # type: ignore[union-attr]
    history = stored(first)
    reply = plan(fold_history(history), "cu1", mail("<m2@x>", thread_ref="<m1@x>"), TRIAGE, NOW, make_id)
    assert [type(e) for e in reply] == [MessageReceived]
    assert reply[0].conversation_id == conv  # type: ignore[union-attr]
    fresh = plan(fold_history(history), "cu1", mail("<m3@x>"), TRIAGE, NOW, make_id)
    assert [type(e) for e in fresh] == [ConversationOpened, MessageReceived, RoutingRequested]


def test_email_threads_by_references_our_sent_message_and_the_reply_token() -> None:
    from events.model import MessageSent

    make_id = ids()
    first = plan(fold_history([]), "cu1", mail("<m1@x>"), TRIAGE, NOW, make_id)
    conv = first[1].conversation_id  # type: ignore[union-attr]
    sent = MessageSent(
        at=NOW,
        customer_id="cu1",
        conversation_id=conv,
        channel="email",
        reply_id="r1",
        provider_message_id="<rd.r1@us>",
    )
    history = fold_history(stored([*first, sent]))
    by_refs = plan(history, "cu1", mail("<m4@x>", references="<zz@x> <rd.r1@us>"), TRIAGE, NOW, make_id)
    by_token = plan(history, "cu1", mail("<m5@x>", thread_token=conv), TRIAGE, NOW, make_id)
    assert by_refs[0].conversation_id == conv  # type: ignore[union-attr]
    assert by_token[0].conversation_id == conv  # type: ignore[union-attr]


def test_automatic_mail_is_recorded_in_its_thread_but_never_routed_or_opened() -> None:
    make_id = ids()
    first = plan(fold_history([]), "cu1", mail("<m1@x>"), TRIAGE, NOW, make_id)
    history = fold_history(stored(first))
    in_thread = plan(history, "cu1", mail("<ooo@x>", thread_ref="<m1@x>", auto="auto-reply"), TRIAGE, NOW, make_id)
    assert [type(e) for e in in_thread] == [MessageReceived]
    stray = plan(history, "cu1", mail("<bulk@x>", auto="bulk"), TRIAGE, NOW, make_id)
    assert stray == []
