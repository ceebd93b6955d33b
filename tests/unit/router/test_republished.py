"""Events re-published onto the log at a later sequence (same content, new sequence: an
operator's partial restore after the duplicate window, a replay tool run twice) are folded
once: a resolved conversation is not routed again, an open one keeps its agent and its place."""

from __future__ import annotations

from datetime import timedelta

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import subjects
from events.model import (
    AgentOffered,
    AgentProfileUpdated,
    AgentStatusChanged,
    ConversationEvent,
    ConversationResolved,
    ConversationTransferred,
    LogEvent,
    OfferAccepted,
    OfferDeclined,
)
from events.skips import SKIPPED
from router import snapshot
from router.fold import REPEATED, evolve
from router.policy import RouterPolicy
from router.state import RouterState
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, same_routing_state

AUTO = RouterPolicy(offer_channels=(), escalation_steps=())


def _skipped() -> float:
    return SKIPPED.labels(where=REPEATED)._value.get()


def test_a_resolved_conversation_is_not_routed_again_after_its_events_are_republished() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    [_assigned] = log.step(at(1), AUTO)
    log.append(ConversationResolved(at=at(2), customer_id="cu-c1", conversation_id="c1", agent_id="ava"))
    history = [event for _, subject, event in log.entries if subject == "rd.evt.c.cu-c1.c1"]
    before = _skipped()
    log.extend(history)  # opened, routing requested, assigned, resolved: all again
    assert "c1" not in log.state.conversations
    assert log.step(at(10), AUTO) == []
    assert log.state.agents["ava"].load == {}
    assert _skipped() - before == 2  # the opening and the routing request (the rest has no view to change)


def test_an_open_conversation_keeps_its_agent_when_an_old_offer_is_republished() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("bob"))
    log.extend(conversation("c1"))
    [offer] = log.step(at(1))
    first = offer.event
    assert isinstance(first, AgentOffered)
    other = "bob" if first.agent_id == "ava" else "ava"
    log.append(OfferDeclined(at=at(2), customer_id="cu-c1", conversation_id="c1", agent_id=first.agent_id))
    [second] = events_of(log.step(at(3)), AgentOffered)
    assert second.agent_id == other
    log.append(OfferAccepted(at=at(4), customer_id="cu-c1", conversation_id="c1", agent_id=other))
    log.append(first)  # the first offer, re-published
    log.append(OfferDeclined(at=at(2), customer_id="cu-c1", conversation_id="c1", agent_id=first.agent_id))
    conv = log.state.conversations["c1"]
    assert (conv.status, conv.agent_id) == ("assigned", other)
    assert log.state.agents[first.agent_id].load == {}
    assert log.state.agents[other].load == {"chat": 1}


def test_a_republished_transfer_counts_once() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("bob"))
    log.extend(conversation("c1"))
    log.step(at(1), AUTO)
    transfer = ConversationTransferred(at=at(2), customer_id="cu-c1", conversation_id="c1", from_agent="ava")
    log.append(transfer)
    log.append(transfer)
    assert log.state.conversations["c1"].transfer_count == 1


def test_a_republished_event_still_moves_its_subject_sequence() -> None:
    # The router's next append there expects the subject's last sequence, the repeat's.
    log = Log()
    log.extend(agent("ava", status="offline"))
    opened, routing = conversation("c1")
    log.extend([opened, routing])
    seq = log.append(routing)
    log.extend(agent("ava", when=at(1)))
    [decision] = log.step(at(2), AUTO)
    assert decision.expected == seq


def test_a_new_conversation_of_the_same_customer_is_routed() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", customer_id="cu-1"))
    log.step(at(1), AUTO)
    log.append(ConversationResolved(at=at(2), customer_id="cu-1", conversation_id="c1", agent_id="ava"))
    log.extend(conversation("c2", customer_id="cu-1", when=at(3)))
    [decision] = log.step(at(4), AUTO)
    assert decision.event.conversation_id == "c2"  # type: ignore[union-attr]


def test_what_was_resolved_survives_a_snapshot() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    log.step(at(1), AUTO)
    log.append(ConversationResolved(at=at(2), customer_id="cu-c1", conversation_id="c1", agent_id="ava"))
    state = snapshot.load(snapshot.dump(log.state))
    seq = log.state.last_seq
    for n, event in enumerate(conversation("c1"), start=1):
        evolve(state, seq + n, subjects.for_event(event), event)
    assert state.conversations == {}


# --- the invariant: a log with arbitrary repeats folds to the state of the log without them ---

_actions = st.lists(
    st.tuples(
        st.sampled_from(["open", "step", "accept", "decline", "transfer", "resolve"]),
        st.integers(min_value=0, max_value=3),
    ),
    min_size=1,
    max_size=25,
)


def _run(actions: list[tuple[str, int]]) -> Log:
    """A log the router and its users wrote: openings, decisions, answers, transfers, resolutions."""
    log = Log()
    log.extend(agent("ava", capacity={"chat": 2, "email": 2}))
    log.extend(agent("bob", capacity={"chat": 1, "email": 1}))
    policy = RouterPolicy()
    opened: set[int] = set()
    for t, (action, n) in enumerate(actions, start=1):
        now = at(t * 20)
        cid, cust = f"c{n}", f"cu-{n % 2}"
        conv = log.state.conversations.get(cid)
        if action == "open" and n not in opened:
            opened.add(n)
            log.extend(conversation(cid, customer_id=cust, channel="chat" if n % 2 else "email", when=now))
        elif action == "step":
            log.step(now, policy)
        elif conv is None:
            continue
        elif action in ("accept", "decline") and conv.status == "offered" and conv.agent_id:
            kind = OfferAccepted if action == "accept" else OfferDeclined
            log.append(kind(at=now, customer_id=cust, conversation_id=cid, agent_id=conv.agent_id))
        elif action == "transfer" and conv.status == "assigned":
            log.append(ConversationTransferred(at=now, customer_id=cust, conversation_id=cid, from_agent=conv.agent_id))
        elif action == "resolve":
            log.append(ConversationResolved(at=now, customer_id=cust, conversation_id=cid, agent_id=conv.agent_id))
    return log


def _facts(state: RouterState) -> RouterState:
    """The state without the sequences (a repeat moves the log's and its subject's)."""
    conversations = {cid: msgspec.structs.replace(c, subject_seq=0) for cid, c in state.conversations.items()}
    return msgspec.structs.replace(state, last_seq=0, conversations=conversations)


@settings(max_examples=150, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
@given(actions=_actions, picks=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=12))
def test_folding_a_log_with_repeats_inserted_gives_the_same_state(
    actions: list[tuple[str, int]], picks: list[tuple[int, int]]
) -> None:
    log = _run(actions)
    original: list[LogEvent] = [event for _, _, event in log.entries]
    # Conversation events (agents' own status and profile events are not remembered: see the report).
    candidates = [event for event in original if isinstance(event, ConversationEvent)]
    repeated = list(original)
    for which, where in picks if candidates else []:  # a copy of an event, somewhere after it
        event = candidates[which % len(candidates)]
        after = repeated.index(event) + 1
        repeated.insert(after + where % (len(repeated) - after + 1), event)
    state = RouterState()
    state.step_plan = log.state.step_plan  # decide's, as ``Log.replay`` keeps it
    for seq, event in enumerate(repeated, start=1):
        evolve(state, seq, subjects.for_event(event), event)
    assert same_routing_state(_facts(state), _facts(log.replay()))


def test_an_agents_old_status_and_profile_republished_do_not_replace_newer_ones() -> None:
    # Found by review: a partial restore re-published yesterday's "available" after today's
    # "away", and the router offered work to an agent who had left.
    log = Log()
    yesterday = at(0)
    log.extend(agent("ava", when=yesterday))
    old_profile = next(e for _, _, e in log.entries if isinstance(e, AgentProfileUpdated))
    old_available = next(e for _, _, e in log.entries if isinstance(e, AgentStatusChanged))
    today = yesterday + timedelta(days=1)
    log.append(AgentStatusChanged(at=today, agent_id="ava", status="away"))
    log.append(
        msgspec.structs.replace(old_profile, at=today, profile=msgspec.structs.replace(old_profile.profile, tier=2))
    )
    log.extend([old_available, old_profile])
    assert log.state.agents["ava"].status == "away"
    assert log.state.agents["ava"].profile.tier == 2
    log.extend(conversation("c1"))
    assert log.step(today + timedelta(seconds=1), AUTO) == []  # nobody available


def test_facts_a_few_seconds_apart_from_two_writers_are_folded_in_log_order() -> None:
    # Two API replicas whose clocks differ by seconds: the log's order wins, as before.
    log = Log()
    log.extend(agent("ava", when=at(0)))
    log.append(AgentStatusChanged(at=at(100), agent_id="ava", status="away"))
    log.append(AgentStatusChanged(at=at(97), agent_id="ava", status="available"))
    assert log.state.agents["ava"].status == "available"
