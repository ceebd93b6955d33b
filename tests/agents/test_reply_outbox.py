"""The fold behind the reply relay: which replies still wait for their connector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.model import DeliveryFailed, LogEvent, MessageSent, ReplyRequested
from events.store import StoredEvent
from services.api.replies import PendingReplies

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def stored(seq: int, event: LogEvent) -> StoredEvent:
    return StoredEvent(seq=seq, subject="rd.evt.c.cu1.cv1", event=event)


def requested(reply_id: str, at: datetime = T0) -> ReplyRequested:
    return ReplyRequested(
        at=at, customer_id="cu1", conversation_id="cv1", channel="sms", reply_id=reply_id, text="hello"
    )


def test_a_reply_is_due_after_the_wait_until_it_is_sent_or_failed() -> None:
    pending = PendingReplies()
    for seq, reply_id in enumerate(("a", "b", "c"), 1):
        pending.apply(stored(seq, requested(reply_id)))
    assert pending.due(T0 + timedelta(seconds=29), 30) == []
    assert [p.reply.reply_id for p in pending.due(T0 + timedelta(seconds=30), 30)] == ["a", "b", "c"]

    at = T0 + timedelta(seconds=1)
    pending.apply(stored(4, MessageSent(at=at, customer_id="cu1", conversation_id="cv1", channel="sms", reply_id="a")))
    pending.apply(
        stored(
            5, DeliveryFailed(at=at, customer_id="cu1", conversation_id="cv1", channel="sms", reply_id="b", reason="x")
        )
    )
    assert [p.reply.reply_id for p in pending.due(T0 + timedelta(seconds=30), 30)] == ["c"]


def test_a_reply_queued_again_waits_again_and_old_ones_are_forgotten() -> None:
    pending = PendingReplies()
    pending.apply(stored(1, requested("old", T0 - timedelta(hours=24))))
    pending.apply(stored(2, requested("new")))
    [due] = pending.due(T0 + timedelta(seconds=31), 30)
    assert due.reply.reply_id == "new" and "old" not in pending.by_id  # beyond the outbound dedupe window
    due.queued_again_at = T0 + timedelta(seconds=31)
    assert pending.due(T0 + timedelta(seconds=40), 30) == []
    assert len(pending.due(T0 + timedelta(seconds=61), 30)) == 1
