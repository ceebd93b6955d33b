"""The fold: idempotent by sequence, tolerant of unknown events, subject sequences kept."""

from __future__ import annotations

import msgspec
import pytest

from events.model import (
    ConversationResolved,
    MessageReceived,
    MessageSent,
    Requirements,
    RoutingRequested,
    UnknownEvent,
)
from router import snapshot
from router.fold import evolve
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, same_routing_state

AUTO = RouterPolicy(offer_channels=(), escalation_steps=())


def test_fold_ignores_sequences_already_folded() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    before = snapshot.dump(log.state)
    for seq, subject, event in log.entries:
        evolve(log.state, seq, subject, event)
    assert snapshot.dump(log.state) == before


def test_unknown_events_only_advance_the_sequences() -> None:
    log = Log()
    log.extend(conversation("c1"))
    evolve(log.state, 99, "rd.evt.c.cu-c1.c1", UnknownEvent(type="from_the_future", raw=b"{}"))
    assert log.state.last_seq == 99
    # The conversation's subject moved on: the next decision on it expects this sequence.
    assert log.state.conversations["c1"].subject_seq == 99
    evolve(log.state, 100, "rd.evt.c.cu-c9.c9", UnknownEvent(type="from_the_future", raw=b"{}"))
    assert "c9" not in log.state.conversations  # nor does it bring a conversation into being


def test_a_decision_after_an_unknown_event_expects_its_sequence() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    subject, unknown = "rd.evt.c.cu-c1.c1", UnknownEvent(type="from_the_future", raw=b"{}")
    seq = len(log.entries) + 1
    log.entries.append((seq, subject, unknown))  # type: ignore[arg-type]
    log.subject_last[subject] = seq
    evolve(log.state, seq, subject, unknown)
    [decision] = log.step(at(2), AUTO)  # appended as the runner does: a stale expectation fails
    assert decision.expected == seq


def test_every_event_on_the_subject_moves_the_expected_sequence() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    seq = log.append(
        MessageReceived(
            at=at(1), customer_id="cu-c1", conversation_id="c1", channel="chat", message_id="m", provider_message_id="p"
        )
    )
    [decision] = log.decide(at(2), AUTO)
    assert decision.expected == seq == log.state.conversations["c1"].subject_seq


def test_resolved_conversations_leave_the_state_and_stray_events_do_not_bring_them_back() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    log.step(at(1), AUTO)
    log.append(ConversationResolved(at=at(2), customer_id="cu-c1", conversation_id="c1"))
    assert "c1" not in log.state.conversations
    assert log.state.customers["cu-c1"].last_agent == "ava"
    log.append(MessageSent(at=at(3), customer_id="cu-c1", conversation_id="c1", channel="chat", reply_id="r"))
    assert "c1" not in log.state.conversations


def test_a_routing_request_after_resolution_routes_nothing() -> None:
    # A conversation is never opened or routed again once resolved (a returning customer's
    # message opens a new one): a routing request there is a re-published one (router.replays).
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    log.step(at(1), AUTO)
    log.append(ConversationResolved(at=at(2), customer_id="cu-c1", conversation_id="c1"))
    log.append(
        RoutingRequested(
            at=at(3), customer_id="cu-c1", conversation_id="c1", channel="chat", requirements=Requirements()
        )
    )
    assert log.step(at(4), AUTO) == []
    assert "c1" not in log.state.conversations


def test_snapshot_round_trip_equals_and_replay_gives_the_same_state() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    log.extend(conversation("c2"))
    log.step(at(1))
    assert snapshot.load(snapshot.dump(log.state)) == log.state
    assert same_routing_state(log.replay(), log.state)


def test_a_snapshot_of_another_format_is_refused_so_the_log_is_replayed() -> None:
    with pytest.raises(snapshot.IncompatibleSnapshot):
        snapshot.load(msgspec.msgpack.encode({"format": snapshot.FORMAT + 1, "state": {}}))
    with pytest.raises(snapshot.IncompatibleSnapshot):
        snapshot.load(msgspec.msgpack.encode({"last_seq": 5}))  # an unversioned (older) snapshot


def test_a_snapshot_that_skipped_events_this_version_knows_is_refused_so_the_log_is_replayed() -> None:
    # A rolling upgrade: the new API writes AgentDeactivated while the old router leads and
    # snapshots a state that skipped it as unknown. The new router must not resume from that
    # state (the agent would stay active): it replays the log.
    log = Log()
    log.extend(agent("ava"))
    future = UnknownEvent(type="agent_from_the_future", raw=b"{}")
    evolve(log.state, 100, "rd.evt.a.ava", future)
    assert snapshot.load(snapshot.dump(log.state)) == log.state  # still unknown to this version
    skipped = UnknownEvent(type="agent_deactivated", raw=b'{"type":"agent_deactivated"}')
    evolve(log.state, 101, "rd.evt.a.ava", skipped)
    with pytest.raises(snapshot.IncompatibleSnapshot, match="agent_deactivated"):
        snapshot.load(snapshot.dump(log.state))


def test_every_event_the_fold_interprets_is_dispatched_to_it() -> None:
    """``evolve`` calls ``_apply`` only for the event types it lists (the rest only move
    their subject's sequence): a case added to ``_apply`` must be listed too."""
    import inspect
    import re

    from router import fold

    cases = [line for line in inspect.getsource(fold._apply).splitlines() if line.strip().startswith("case ")]
    handled = {name for line in cases for name in re.findall(r"(\w+)\(\)", line)}
    assert handled, "no cases found"
    assert handled <= {kind.__name__ for kind in fold._APPLIED}
    assert {kind.__name__ for kind in fold._TIMED} <= handled
