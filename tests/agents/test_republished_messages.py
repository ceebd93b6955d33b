"""A customer message re-published (same content, later sequence) pings its agent once, also
after a restart from a snapshot; and a resolved conversation's opening re-published leaves
nothing of the customer (contact, preview) in delivery's memory."""

from __future__ import annotations

from datetime import UTC, datetime

from events.model import (
    ConversationAssigned,
    ConversationOpened,
    ConversationResolved,
    DecisionReason,
    LogEvent,
    MessageReceived,
    Requirements,
    RoutingRequested,
)
from events.stored import StoredEvent
from services.delivery.notices import Facts

AT = datetime(2026, 12, 6, tzinfo=UTC)
SUBJECT = "rd.evt.c.cu1.cv1"
IDS = {"customer_id": "cu1", "conversation_id": "cv1"}
OPENED = ConversationOpened(at=AT, **IDS, channel="chat", contact="+15550001111")
MESSAGE = MessageReceived(
    at=AT, **IDS, channel="chat", message_id="m1", provider_message_id="p1", text="my order", contact="+15550001111"
)
ASSIGNED: list[LogEvent] = [
    OPENED,
    MESSAGE,
    RoutingRequested(at=AT, **IDS, channel="chat", requirements=Requirements()),
    ConversationAssigned(at=AT, **IDS, channel="chat", agent_id="ava", reason=DecisionReason(rule="r")),
]


def _notices(facts: Facts, events: list[LogEvent]) -> list[str]:
    start = facts.state.last_seq
    return [
        notice.kind
        for n, event in enumerate(events, 1)
        for notice in facts.apply(StoredEvent(start + n, SUBJECT, event))
    ]


def _facts() -> Facts:
    return Facts(console_url="http://c", api_url="http://a")


def test_a_republished_message_pings_its_agent_once() -> None:
    facts = _facts()
    assert _notices(facts, ASSIGNED) == ["assigned"]
    later = MessageReceived(
        at=AT, **IDS, channel="chat", message_id="m2", provider_message_id="p2", text="any news?", contact="x"
    )
    assert _notices(facts, [later, MESSAGE]) == ["message"]
    assert facts.previews["cv1"] == "any news?"  # the preview is still the last message, not the repeat


def test_a_republished_message_after_a_restart_from_a_snapshot_pings_nobody() -> None:
    facts = _facts()
    _notices(facts, ASSIGNED)
    restarted = _facts()
    restarted.restore(facts.state)
    log = [StoredEvent(seq, SUBJECT, event) for seq, event in enumerate(ASSIGNED, 1)]
    assert restarted.unread_in([StoredEvent(9, SUBJECT, MESSAGE)]) == {"cv1"}
    restarted.absorb("cv1", log)
    assert _notices(restarted, [MESSAGE]) == []


def test_a_resolved_conversation_republished_keeps_nothing_of_its_customer() -> None:
    facts = _facts()
    resolved = ConversationResolved(at=AT, **IDS, agent_id="ava")
    assert _notices(facts, [*ASSIGNED, resolved]) == ["assigned", "resolved"]
    assert _notices(facts, [OPENED, MESSAGE]) == []
    assert "cv1" not in facts.contacts
    assert "cv1" not in facts.previews
