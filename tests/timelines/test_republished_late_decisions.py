"""A decision that raced a resolution (the router offered while an agent resolved) is on the
timeline once: re-published later, in the same batch or the next, it writes no second entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events import subjects
from events.model import AgentOffered, ConversationOpened, ConversationResolved, DecisionReason, LogEvent
from events.stored import StoredEvent
from services.timelines.fold import fold_batch
from services.timelines.rows import ConversationSummary

AT = datetime(2026, 12, 6, 9, tzinfo=UTC)
IDS = {"customer_id": "cu1", "conversation_id": "cv1"}
SUBJECT = subjects.conversation("cu1", "cv1")
LATE_OFFER = AgentOffered(
    at=AT + timedelta(seconds=2),
    **IDS,
    agent_id="ava",
    expires_at=AT + timedelta(minutes=1),
    reason=DecisionReason(rule="r"),
)
RESOLVED_FIRST: list[LogEvent] = [
    ConversationOpened(at=AT, **IDS, channel="chat", contact="+15550000000"),
    ConversationResolved(at=AT + timedelta(seconds=1), **IDS, agent_id="ava"),
    LATE_OFFER,
]


def _stored(events: list[LogEvent], start: int = 1) -> list[StoredEvent]:
    return [StoredEvent(seq, SUBJECT, event) for seq, event in enumerate(events, start)]


def test_a_late_decision_republished_in_the_same_batch_is_one_entry() -> None:
    rows = fold_batch(_stored([*RESOLVED_FIRST, LATE_OFFER]), lambda _cid: None)
    assert [e.kind for e in rows.entries] == ["opened", "resolved", "offered"]
    assert rows.repeats == 1
    assert rows.summaries["cv1"].status == "resolved"


def test_a_late_decision_republished_in_a_later_batch_is_one_entry() -> None:
    first = fold_batch(_stored(RESOLVED_FIRST), lambda _cid: None)
    committed: dict[str, ConversationSummary] = dict(first.summaries)
    again = fold_batch(_stored([LATE_OFFER], start=len(RESOLVED_FIRST) + 1), committed.get)
    assert again.entries == []
    assert again.repeats == 1
