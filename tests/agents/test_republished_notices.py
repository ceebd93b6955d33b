"""Delivery says nothing of a re-published event (same content, later sequence): its agent was
told when it first happened, and a resolved conversation stays resolved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.model import (
    AgentOffered,
    ConversationOpened,
    ConversationResolved,
    DecisionReason,
    LogEvent,
    OfferAccepted,
    Requirements,
    RoutingRequested,
)
from events.stored import StoredEvent
from services.delivery.notices import Facts

AT = datetime(2026, 12, 6, tzinfo=UTC)


def _notices(facts: Facts, events: list[LogEvent]) -> list[str]:
    return [
        notice.kind
        for seq, event in enumerate(events, 1)
        for notice in facts.apply(StoredEvent(seq, "rd.evt.c.cu1.cv1", event))
    ]


def test_a_republished_conversation_tells_nobody_again() -> None:
    ids = {"customer_id": "cu1", "conversation_id": "cv1"}
    history: list[LogEvent] = [
        ConversationOpened(at=AT, **ids, channel="chat", contact="x"),
        RoutingRequested(at=AT, **ids, channel="chat", requirements=Requirements()),
        AgentOffered(
            at=AT, **ids, agent_id="ava", expires_at=AT + timedelta(minutes=1), reason=DecisionReason(rule="r")
        ),
        OfferAccepted(at=AT, **ids, agent_id="ava"),
        ConversationResolved(at=AT, **ids, agent_id="ava"),
    ]
    facts = Facts(console_url="http://c", api_url="http://a")
    assert _notices(facts, history) == ["offer", "accepted", "resolved"]
    assert _notices_after(facts, history) == []
    assert "cv1" not in facts.state.conversations


def test_an_open_conversation_republished_tells_nobody_again() -> None:
    ids = {"customer_id": "cu1", "conversation_id": "cv1"}
    offer = AgentOffered(
        at=AT, **ids, agent_id="ava", expires_at=AT + timedelta(minutes=1), reason=DecisionReason(rule="r")
    )
    history: list[LogEvent] = [
        ConversationOpened(at=AT, **ids, channel="chat", contact="x"),
        RoutingRequested(at=AT, **ids, channel="chat", requirements=Requirements()),
        offer,
    ]
    facts = Facts(console_url="http://c", api_url="http://a")
    assert _notices(facts, history) == ["offer"]
    assert _notices_after(facts, [offer]) == []


def _notices_after(facts: Facts, events: list[LogEvent]) -> list[str]:
    start = facts.state.last_seq
    return [
        notice.kind
        for n, event in enumerate(events, 1)
        for notice in facts.apply(StoredEvent(start + n, "rd.evt.c.cu1.cv1", event))
    ]
