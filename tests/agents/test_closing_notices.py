"""The fold behind the web chat's resolution notice: which resolutions still owe one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.model import ConversationResolved, LogEvent, MessageReceived
from events.store import StoredEvent
from services.api.closings import NOTICE_HORIZON, PendingClosings, notice_id

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def stored(seq: int, event: LogEvent) -> StoredEvent:
    return StoredEvent(seq=seq, subject=f"rd.evt.c.cu1.{getattr(event, 'conversation_id', 'x')}", event=event)


def resolved(conversation_id: str, at: datetime = T0) -> ConversationResolved:
    return ConversationResolved(at=at, customer_id="cu1", conversation_id=conversation_id)


def test_a_recent_resolution_owes_a_notice_once_and_an_old_one_none() -> None:
    clock = Clock()
    pending = PendingClosings(clock)
    pending.apply(stored(1, resolved("old", T0 - NOTICE_HORIZON - timedelta(seconds=1))))  # a long log's past
    message = MessageReceived(
        at=T0, customer_id="cu1", conversation_id="a", channel="chat", message_id="m1", provider_message_id="p1"
    )
    pending.apply(stored(2, message))
    pending.apply(stored(3, resolved("a")))
    pending.apply(stored(4, resolved("a")))  # re-published: one notice
    pending.apply(stored(5, resolved("b")))
    erased = ConversationResolved(at=T0, customer_id="cu1", conversation_id="e", erased=True)
    pending.apply(stored(6, erased))  # the customer's erasure closed it: nothing is said
    assert [(c.seq, c.event.conversation_id) for c in pending.due()] == [(3, "a"), (5, "b")]
    assert notice_id("a") == "resolved:a"


def test_after_a_snapshot_the_log_is_read_again_from_the_oldest_notice_owed() -> None:
    clock = Clock()
    pending = PendingClosings(clock)
    pending.apply(stored(7, resolved("a")))
    pending.apply(stored(9, resolved("b")))
    assert pending.refeed_from() == 7
    del pending.by_conversation["a"]  # queued
    assert pending.refeed_from() == 9
    del pending.by_conversation["b"]
    assert pending.refeed_from() == 10  # nothing owed: nothing read again


def test_a_notice_not_queued_within_the_horizon_is_given_up() -> None:
    clock = Clock()
    pending = PendingClosings(clock)
    pending.apply(stored(1, resolved("a")))
    clock.now = T0 + NOTICE_HORIZON
    assert len(pending.due()) == 1
    clock.now = T0 + NOTICE_HORIZON + timedelta(seconds=1)
    assert pending.due() == [] and pending.by_conversation == {}
