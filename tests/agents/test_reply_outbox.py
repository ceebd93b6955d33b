"""The fold behind the reply relay: which replies still wait for their connector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.model import DeliveryFailed, LogEvent, MessageSent, ReplyRequested
from events.store import StoredEvent
from services.api.replies import ORDER_WAIT, PendingReplies, earlier_unsent

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def stored(seq: int, event: LogEvent) -> StoredEvent:
    return StoredEvent(seq=seq, subject="rd.evt.c.cu1.cv1", event=event)


def requested(reply_id: str, at: datetime = T0, conversation_id: str = "cv1") -> ReplyRequested:
    return ReplyRequested(
        at=at, customer_id="cu1", conversation_id=conversation_id, channel="sms", reply_id=reply_id, text="hello"
    )


def test_a_reply_is_due_after_the_wait_until_it_is_sent_or_failed() -> None:
    pending = PendingReplies()
    for seq, reply_id in enumerate(("a", "b", "c"), 1):
        pending.apply(stored(seq, requested(reply_id, conversation_id=f"cv_{reply_id}")))
    assert pending.due(T0 + timedelta(seconds=29), 30) == []
    assert [p.reply.reply_id for p in pending.due(T0 + timedelta(seconds=30), 30)] == ["a", "b", "c"]

    at = T0 + timedelta(seconds=1)
    pending.apply(stored(4, MessageSent(at=at, customer_id="cu1", conversation_id="cv_a", channel="sms", reply_id="a")))
    pending.apply(
        stored(
            5,
            DeliveryFailed(at=at, customer_id="cu1", conversation_id="cv_b", channel="sms", reply_id="b", reason="x"),
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


def test_a_reply_waits_for_the_earlier_ones_of_its_conversation_and_goes_as_soon_as_they_have_an_outcome() -> None:
    """Replies go out in the order they were written: a later reply of the conversation is
    neither queued nor queued again while an earlier one has no outcome, is due at once when
    the last earlier one has one, and is held back no longer than ``ORDER_WAIT``."""
    pending = PendingReplies()
    pending.apply(stored(1, requested("a")))
    pending.apply(stored(2, requested("b")))
    pending.apply(stored(3, requested("c")))
    pending.apply(stored(4, requested("x", conversation_id="cv2")))
    assert [p.reply.reply_id for p in pending.due(T0 + timedelta(seconds=31), 30)] == ["a", "x"]
    assert [p.reply_id for p in (pending.by_id["b"].reply, pending.by_id["c"].reply)] == ["b", "c"]
    assert pending.by_id["b"].held and not pending.released.is_set()

    at = T0 + timedelta(seconds=1)
    pending.apply(stored(5, MessageSent(at=at, customer_id="cu1", conversation_id="cv1", channel="sms", reply_id="a")))
    assert pending.released.is_set()
    assert [p.reply.reply_id for p in pending.due(T0 + timedelta(seconds=2), 30)] == ["b"]  # at once, not after 30 s

    stuck = T0 + ORDER_WAIT + timedelta(seconds=1)  # "b" never got an outcome
    assert [p.reply.reply_id for p in pending.due(stuck, 30)] == ["b", "c", "x"]


def test_a_reply_is_queued_only_after_the_earlier_ones_of_its_conversation_have_an_outcome() -> None:
    a, b, c = requested("a"), requested("b"), requested("c")
    events = [stored(1, a), stored(2, b), stored(3, c)]
    assert earlier_unsent(events, a, T0) == []
    assert earlier_unsent(events, c, T0) == ["a", "b"]
    sent = MessageSent(at=T0, customer_id="cu1", conversation_id="cv1", channel="sms", reply_id="a")
    failed = DeliveryFailed(at=T0, customer_id="cu1", conversation_id="cv1", channel="sms", reply_id="b", reason="x")
    assert earlier_unsent([*events, stored(4, sent), stored(5, failed)], c, T0) == []
    assert earlier_unsent(events, c, T0 + ORDER_WAIT) == []
