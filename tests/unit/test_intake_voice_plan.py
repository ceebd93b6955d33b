"""Intake's plan for voice call facts (found by an audit): an agent's unanswered ring hands the
call back without her, only while she holds it; the caller's own end resolves the call unless
a callback or a voicemail keeps it open."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from events.model import (
    ConversationAssigned,
    ConversationReleased,
    ConversationResolved,
    InboundMessage,
    LogEvent,
    MessageReceived,
)
from events.store import StoredEvent
from services.intake.customer_history import fold_history
from services.intake.plan import Triage, plan

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TRIAGE = Triage(identity="phone:+15551234567", language="en", skills={"general": 1}, priority=0)
SID = "CA" + "1" * 32


def voice(pmid: str, **metadata: str) -> InboundMessage:
    meta = {"call_sid": SID, "platform": "voice", **metadata}
    return InboundMessage(
        at=NOW, channel="voice", provider="twilio", provider_message_id=pmid, sender="+15551234567", metadata=meta
    )


def ids() -> Callable[[str], str]:
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}{next(counter)}"


def stored(events: list[LogEvent]) -> list[StoredEvent]:
    return [StoredEvent(seq=i + 1, subject="rd.evt.c.x.y", event=e) for i, e in enumerate(events)]


def call_assigned_to(agent_id: str, make_id: Callable[[str], str]) -> tuple[list[LogEvent], str]:
    first = plan(fold_history([]), "cu1", voice(SID, kind="call"), TRIAGE, NOW, make_id)
    conv = first[1].conversation_id  # type: ignore[union-attr]
    assigned = ConversationAssigned(
        at=NOW, customer_id="cu1", conversation_id=conv, agent_id=agent_id, channel="voice", reason="best_match"
    )
    return [*first, assigned], conv


def status(pmid: str, **metadata: str) -> InboundMessage:
    return voice(pmid, kind="call_status", auto="1", **metadata)


def test_an_unanswered_ring_hands_the_call_back_without_the_agent() -> None:
    make_id = ids()
    history, conv = call_assigned_to("ava", make_id)
    events = plan(
        fold_history(stored(history)), "cu1", status(f"{SID}~ava:dial:no-answer", releases="ava"), TRIAGE, NOW, make_id
    )
    # Handed back as a release she declined, not a transfer (reports and the third-transfer
    # rule counted every unanswered ring as one).
    assert [type(e) for e in events] == [MessageReceived, ConversationReleased]
    released = events[1]
    assert isinstance(released, ConversationReleased)
    assert (released.conversation_id, released.agent_id, released.declined) == (conv, "ava", True)
    assert released.reason == "call_not_answered"


def test_an_unanswered_ring_of_an_agent_who_no_longer_holds_it_changes_nothing() -> None:
    make_id = ids()
    history, _ = call_assigned_to("bea", make_id)
    events = plan(
        fold_history(stored(history)), "cu1", status(f"{SID}~ava:dial:busy", releases="ava"), TRIAGE, NOW, make_id
    )
    assert [type(e) for e in events] == [MessageReceived]


def test_the_callers_end_resolves_the_call() -> None:
    make_id = ids()
    history, conv = call_assigned_to("ava", make_id)
    events = plan(
        fold_history(stored(history)), "cu1", status(f"{SID}:call:completed", ends_call="1"), TRIAGE, NOW, make_id
    )
    assert [type(e) for e in events] == [MessageReceived, ConversationResolved]
    assert events[1].conversation_id == conv


def test_a_caller_who_hung_up_in_the_queue_stays_waiting_for_a_call_back() -> None:
    # No agent held it: the next free agent calls them back (tests/reports/test_voice_system.py).
    make_id = ids()
    history = plan(fold_history([]), "cu1", voice(SID, kind="call"), TRIAGE, NOW, make_id)
    events = plan(
        fold_history(stored(history)), "cu1", status(f"{SID}:call:completed", ends_call="1"), TRIAGE, NOW, make_id
    )
    assert [type(e) for e in events] == [MessageReceived]


@pytest.mark.parametrize("kept", [f"{SID}:callback", "RE" + "2" * 32])
def test_the_callers_end_after_a_callback_request_or_a_voicemail_keeps_it_open(kept: str) -> None:
    make_id = ids()
    history, _ = call_assigned_to("ava", make_id)
    history += plan(fold_history(stored(history)), "cu1", voice(kept, kind="voicemail"), TRIAGE, NOW, make_id)
    events = plan(
        fold_history(stored(history)), "cu1", status(f"{SID}:call:completed", ends_call="1"), TRIAGE, NOW, make_id
    )
    assert [type(e) for e in events] == [MessageReceived]


def test_another_calls_end_resolves_nothing() -> None:
    make_id = ids()
    history, _ = call_assigned_to("ava", make_id)
    other = "CA" + "9" * 32
    message = InboundMessage(
        at=NOW,
        channel="voice",
        provider="twilio",
        provider_message_id=f"{other}:call:completed",
        sender="+15551234567",
        metadata={"call_sid": other, "kind": "call_status", "auto": "1", "ends_call": "1"},
    )
    assert [type(e) for e in plan(fold_history(stored(history)), "cu1", message, TRIAGE, NOW, make_id)] == [
        MessageReceived
    ]
