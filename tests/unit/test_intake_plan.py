"""Intake's plan: what a message from a customer adds to the log, from history alone."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from events.model import (
    ConversationOpened,
    ConversationResolved,
    CustomerCreated,
    CustomerProfileUpdated,
    CustomersMerged,
    InboundMessage,
    LogEvent,
    MessageReceived,
    Requirements,
    RoutingRequested,
)
from events.store import StoredEvent
from services.intake.customer_history import fold_history
from services.intake.plan import Triage, is_automatic, plan

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TRIAGE = Triage(identity="phone:+15551234567", language="en", skills={"billing": 1}, priority=0)


def sms(sid: str, text: str = "my invoice is wrong") -> InboundMessage:
    return InboundMessage(
        at=NOW, channel="sms", provider="twilio", provider_message_id=sid, sender="+15551234567", text=text
    )


def ids() -> Callable[[str], str]:
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


# --- a crash may cut the plan after any step: planning again completes exactly the rest -----

CONTACTS = {"sms": "+15551234567", "chat": "visitor-42", "social": "psid-1001", "email": "ann@example.com"}


@dataclass(frozen=True)
class Shape:
    """One way a message arrives: channel, public or not, and for mail how it threads."""

    name: str
    channel: str
    public: bool = False
    thread_ref: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    def message(self, sid: str) -> InboundMessage:
        return InboundMessage(
            at=NOW,
            channel=self.channel,
            provider="p",
            provider_message_id=sid,
            sender=CONTACTS[self.channel],
            text="my invoice is wrong",
            thread_ref=self.thread_ref,
            public=self.public,
            metadata=dict(self.metadata),
        )


SHAPES = (
    Shape("sms", "sms"),
    Shape("whatsapp via twilio", "sms", metadata=(("platform", "whatsapp"),)),
    Shape("web chat", "chat"),
    Shape("social direct message", "social", metadata=(("platform", "messenger"),)),
    Shape("social public comment", "social", public=True, metadata=(("kind", "comment"),)),
    Shape("new mail", "email"),
    Shape("mail reply", "email", thread_ref="<base@x>"),
    Shape("auto-reply in a thread", "email", thread_ref="<base@x>", metadata=(("auto", "auto-reply"),)),
    Shape("stray bulk mail", "email", metadata=(("auto", "bulk"),)),
)


def past(kind: str, shape: Shape) -> list[LogEvent]:
    """The customer's history before the message: new, or returning in several states."""
    if kind == "new":
        return []
    events: list[LogEvent] = [CustomerCreated(at=NOW, customer_id="cu1", identity=TRIAGE.identity)]
    channel = shape.channel if kind != "returning, open elsewhere" else ("chat" if shape.channel != "chat" else "sms")
    conv = "base-cv1"
    # After a merge, the merged customer's open conversation stays on its own subjects.
    owner = "cu0" if kind == "returning, merged" else "cu1"
    if owner != "cu1":
        events.append(CustomersMerged(at=NOW, customer_id="cu1", merged_id=owner))
    events += [
        ConversationOpened(
            at=NOW,
            customer_id=owner,
            conversation_id=conv,
            channel=channel,
            contact=CONTACTS[channel],
            public=shape.public,
        ),
        MessageReceived(
            at=NOW,
            customer_id=owner,
            conversation_id=conv,
            channel=channel,
            message_id="base-msg1",
            provider_message_id="<base@x>",
        ),
    ]
    if kind not in ("returning, open and never routed", "returning, merged"):
        events.append(
            RoutingRequested(
                at=NOW, customer_id=owner, conversation_id=conv, channel=channel, requirements=Requirements()
            )
        )
    if kind == "returning, resolved":
        events.append(ConversationResolved(at=NOW, customer_id="cu1", conversation_id=conv))
    if kind == "returning, prefers Spanish":
        events.append(CustomerProfileUpdated(at=NOW, customer_id="cu1", preferred_language="es"))
    return events


CUSTOMERS = (
    "new",
    "returning, resolved",
    "returning, open",
    "returning, open elsewhere",
    "returning, open and never routed",
    "returning, prefers Spanish",
    "returning, merged",  # its merged customer's conversation is open and never routed
)


def comparable(events: list[LogEvent]) -> list[LogEvent]:
    """Events without the message id each planning draws afresh."""
    return [msgspec.structs.replace(e, message_id="") if isinstance(e, MessageReceived) else e for e in events]


def replan(history: list[LogEvent], message: InboundMessage, tag: str = "") -> list[LogEvent]:
    """Plan with ids counted afresh (a planning that draws the same steps draws the same ids);
    ``tag`` keeps the ids of different plannings apart."""
    make_id = ids()
    return plan(fold_history(stored(history), "cu1"), "cu1", message, TRIAGE, NOW, lambda p: tag + make_id(p))


@settings(max_examples=300, deadline=None)
@given(shape=st.sampled_from(SHAPES), customer=st.sampled_from(CUSTOMERS))
def test_planning_again_after_a_cut_completes_exactly_the_missing_steps(shape: Shape, customer: str) -> None:
    base = past(customer, shape)
    message = shape.message("M1")
    full = replan(base, message)
    if is_automatic(message):
        assert not any(isinstance(e, ConversationOpened | RoutingRequested) for e in full)
    for cut in range(len(full) + 1):
        written = [*base, *full[:cut]]
        again = replan(written, message)
        assert comparable(again) == comparable(full[cut:]), (shape.name, customer, cut)
        assert replan([*written, *again], message) == []  # complete: nothing more to plan
    # Whole: one MessageReceived for the message, and (unless automatic) its conversation's
    # routing requested once.
    log = [*base, *full]
    received = [e for e in log if isinstance(e, MessageReceived) and e.provider_message_id == "M1"]
    assert len(received) == (0 if not full else 1)
    if received and not is_automatic(message):
        conv = received[0].conversation_id
        assert sum(isinstance(e, RoutingRequested) and e.conversation_id == conv for e in log) == 1


@settings(max_examples=300, deadline=None)
@given(
    shape=st.sampled_from(SHAPES),
    customer=st.sampled_from(CUSTOMERS),
    cut=st.integers(min_value=0, max_value=4),
    meanwhile=st.sampled_from(("another message", "resolved", "nothing")),
)
def test_what_happened_in_between_is_respected(shape: Shape, customer: str, cut: int, meanwhile: str) -> None:
    """Between the crash and the redelivery the customer wrote again, or the conversation
    was resolved: the redelivery neither routes a resolved conversation nor routes twice."""
    base = past(customer, shape)
    message = shape.message("M1")
    full = replan(base, message)
    cut = min(cut, len(full))
    written = [*base, *full[:cut]]
    resolved: set[str] = set()
    if meanwhile == "another message":
        written += replan(written, shape.message("M2"), tag="m2-")
    elif meanwhile == "resolved":
        opened = fold_history(stored(written), "cu1").open
        resolved = set(opened)
        written += [ConversationResolved(at=NOW, customer_id="cu1", conversation_id=c) for c in sorted(opened)]
    again = replan(written, message, tag="again-")
    log = [*written, *again]
    assert replan(log, message) == []
    assert not [e for e in again if isinstance(e, RoutingRequested) and e.conversation_id in resolved]
    assert sum(isinstance(e, MessageReceived) and e.provider_message_id == "M1" for e in log) <= 1
    routed: dict[str, int] = {}
    for e in log:
        if isinstance(e, RoutingRequested):
            routed[e.conversation_id] = routed.get(e.conversation_id, 0) + 1
    assert all(n == 1 for n in routed.values()), routed
    # The conversations holding this test's messages, when open and written by a person,
    # are routed.
    history = fold_history(stored(log), "cu1")
    for e in log:
        if isinstance(e, MessageReceived) and e.provider_message_id in ("M1", "M2") and not e.metadata.get("auto"):
            conv = history.open.get(e.conversation_id)
            assert conv is None or conv.routing_requested, (shape.name, customer, cut, meanwhile)
    # No open conversation is left empty (a second one opened for the same message).
    for c in history.open:
        assert any(isinstance(e, MessageReceived) and e.conversation_id == c for e in log), c


def test_an_opening_cut_after_its_message_is_routed_when_redelivered() -> None:
    """The bug this guards: the redelivered message was seen, so nothing was planned."""
    first = plan(fold_history([]), "cu1", sms("SM1"), TRIAGE, NOW, ids())
    again = plan(fold_history(stored(first[:3])), "cu1", sms("SM1"), TRIAGE, NOW, ids())
    assert [type(e) for e in again] == [RoutingRequested]
    assert again[0].conversation_id == first[1].conversation_id  # type: ignore[union-attr]


def test_a_new_mail_cut_after_its_opening_continues_that_conversation() -> None:
    first = plan(fold_history([]), "cu1", mail("<m1@x>"), TRIAGE, NOW, ids())
    again = plan(fold_history(stored(first[:2])), "cu1", mail("<m1@x>"), TRIAGE, NOW, ids())
    assert [type(e) for e in again] == [MessageReceived, RoutingRequested]
    assert {e.conversation_id for e in again} == {first[1].conversation_id}  # type: ignore[union-attr]


def test_a_newer_versions_event_last_on_a_customers_subject_still_moves_the_expected_sequence() -> None:
    from events.model import UnknownEvent

    history = [
        StoredEvent(
            seq=1,
            subject="rd.evt.c.cu_1._customer",
            event=CustomerCreated(at=NOW, customer_id="cu_1", identity="phone:+1"),
        ),
        StoredEvent(seq=7, subject="rd.evt.c.cu_1.cv_9", event=UnknownEvent(type="from_the_future", raw=b"{}")),
    ]
    assert fold_history(history, "cu_1").seqs["cu_1"] == 7
