"""A resolved conversation's summary is final: its events re-published at later sequences (an
operator's partial restore, a replay tool run twice) do not reopen it or count its messages again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events import subjects
from events.model import (
    AgentOffered,
    ConversationOpened,
    ConversationResolved,
    DecisionReason,
    LogEvent,
    MessageReceived,
    MessageSent,
    OfferAccepted,
    Requirements,
    RoutingRequested,
)
from events.stored import StoredEvent
from services.timelines.fold import fold_batch

AT = datetime(2026, 12, 6, 9, tzinfo=UTC)
IDS = {"customer_id": "cu1", "conversation_id": "cv1"}


def _history() -> list[LogEvent]:
    return [
        ConversationOpened(at=AT, **IDS, channel="sms", contact="+15550000000"),
        MessageReceived(at=AT, **IDS, channel="sms", message_id="m1", provider_message_id="p1", text="hi"),
        RoutingRequested(at=AT, **IDS, channel="sms", requirements=Requirements()),
        AgentOffered(
            at=AT, **IDS, agent_id="ava", expires_at=AT + timedelta(minutes=1), reason=DecisionReason(rule="r")
        ),
        OfferAccepted(at=AT + timedelta(seconds=5), **IDS, agent_id="ava"),
        ConversationResolved(at=AT + timedelta(minutes=5), **IDS, agent_id="ava"),
    ]


def _summary(events: list[LogEvent]):  # type: ignore[no-untyped-def]
    stored = [StoredEvent(seq, subjects.for_event(e), e) for seq, e in enumerate(events, 1)]
    return fold_batch(stored, lambda _key: None).summaries["cv1"]


def test_a_resolved_conversation_republished_stays_resolved_and_counts_its_message_once() -> None:
    history = _history()
    once = _summary(history)
    again = _summary([*history, *history[:5]])
    assert (again.status, again.agent_id, again.resolved_at) == ("resolved", "ava", once.resolved_at)
    assert (again.message_count, again.offers_declined, again.first_assigned_at) == (1, 0, once.first_assigned_at)


def test_a_reply_outcome_after_the_resolution_still_counts_as_its_activity() -> None:
    sent = MessageSent(at=AT + timedelta(minutes=6), **IDS, channel="sms", reply_id="rp1")
    summary = _summary([*_history(), sent])
    assert summary.status == "resolved" and summary.last_seq == 7
