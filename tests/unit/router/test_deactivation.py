"""Deactivated agents (``AgentDeactivated`` / ``AgentReactivated``): never offered or
assigned work, everything they hold handed back, holds for them ended; reactivated, they
come back offline with their profile."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.model import (
    AgentDeactivated,
    AgentOffered,
    AgentReactivated,
    AgentStatusChanged,
    ConversationAssigned,
    ConversationReleased,
    ConversationResolved,
    DecisionReason,
    LogEvent,
    OfferAccepted,
)
from router import snapshot
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder, same_routing_state
from tests.unit.router.test_properties import (
    OPS,
    POLICIES,
    World,
    act,
    check_exclusions,
    check_holding,
    check_nobody_left_waiting,
    check_replay_and_snapshot,
)

CHAT_ONLY = RouterPolicy(offer_channels=("chat",))
MOVED = DecisionReason(rule="operator", step=0, score={})


def test_a_deactivated_agent_is_never_offered_work() -> None:
    log = Log()
    log.extend([*agent("ava"), AgentDeactivated(at=at(0), agent_id="ava", actor="op")])
    log.extend(conversation("c1"))
    assert log.step(at(1)) == []
    assert log.state.conversations["c1"].status == "waiting"
    assert not log.state.free_agents and not log.state.capable


def test_status_changes_of_a_deactivated_agent_do_not_bring_her_back() -> None:
    log = Log()
    log.extend([*agent("ava"), AgentDeactivated(at=at(0), agent_id="ava")])
    log.append(AgentStatusChanged(at=at(1), agent_id="ava", status="available"))
    log.extend(conversation("c1", when=at(2)))
    assert log.step(at(3)) == []
    assert log.state.agents["ava"].status == "offline"


def test_her_offers_and_every_conversation_she_holds_are_handed_back() -> None:
    log = Log()
    log.extend([*agent("ava", capacity={"chat": 1, "email": 1}), *agent("bruno", capacity={"chat": 1, "email": 1})])
    log.extend(conversation("offered", channel="chat"))
    log.extend(conversation("mail", channel="email"))
    log.step(at(1), CHAT_ONLY)
    ava_holds = {cid for cid in ("offered", "mail") if holder(log, cid) == "ava"}
    assert ava_holds, "ava got work"
    # Bruno gets nothing more: he is full either way, so what ava hands back waits.
    log.append(AgentDeactivated(at=at(2), agent_id="ava"))
    released = events_of(log.step(at(3), CHAT_ONLY), ConversationReleased)
    assert {e.conversation_id for e in released} == ava_holds  # email too: she is not coming back
    assert all(e.reason == "agent_deactivated" for e in released)
    assert not log.state.agents["ava"].holding and not log.state.agents["ava"].load
    assert same_routing_state(log.replay(), log.state)


def test_an_offline_agent_keeps_her_email_a_deactivated_one_does_not() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"email": 1}))
    log.extend(conversation("mail", channel="email"))
    log.step(at(1))
    assert holder(log, "mail") == "ava"
    log.append(AgentStatusChanged(at=at(2), agent_id="ava", status="offline"))
    assert events_of(log.step(at(3)), ConversationReleased) == []
    log.append(AgentDeactivated(at=at(4), agent_id="ava"))
    assert [e.conversation_id for e in events_of(log.step(at(5)), ConversationReleased)] == ["mail"]


def test_the_case_owner_hold_ends_at_once_when_she_is_deactivated() -> None:
    log = Log()
    log.extend([*agent("ava"), *agent("bruno")])
    log.extend(conversation("c1", customer_id="maria"))
    [offer] = events_of(log.step(at(1), CHAT_ONLY), AgentOffered)
    owner = offer.agent_id
    log.append(OfferAccepted(at=at(2), customer_id="maria", conversation_id="c1", agent_id=owner))
    log.append(ConversationResolved(at=at(3), customer_id="maria", conversation_id="c1", agent_id=owner))
    log.append(AgentDeactivated(at=at(4), agent_id=owner))
    log.extend(conversation("c2", customer_id="maria", when=at(5)))
    assert log.state.conversations["c2"].preferred_agent == owner  # the fold holds it for her...
    log.step(at(5), CHAT_ONLY)  # ...decide does not wait for a deactivated agent
    other = "bruno" if owner == "ava" else "ava"
    assert holder(log, "c2") == other


def test_an_operator_assignment_to_a_deactivated_agent_is_handed_back() -> None:
    log = Log()
    log.extend([*agent("ava"), AgentDeactivated(at=at(0), agent_id="ava")])
    log.extend(conversation("c1", channel="email"))
    log.append(
        ConversationAssigned(
            at=at(1), customer_id="cu-c1", conversation_id="c1", agent_id="ava", channel="email", reason=MOVED
        )
    )
    released = events_of(log.step(at(2)), ConversationReleased)
    assert [e.conversation_id for e in released] == ["c1"]


def test_reactivated_she_comes_back_offline_with_her_profile() -> None:
    log = Log()
    log.extend(agent("ava", skills={"billing": 4}, languages={"de": 5}))
    profile = log.state.agents["ava"].profile
    log.append(AgentDeactivated(at=at(1), agent_id="ava"))
    log.append(AgentReactivated(at=at(2), agent_id="ava"))
    ava = log.state.agents["ava"]
    assert ava.active and ava.status == "offline" and ava.profile == profile
    log.extend(conversation("c1", skills={"billing": 2}, language="de", when=at(3)))
    assert log.step(at(3)) == []  # offline: no work yet
    log.append(AgentStatusChanged(at=at(4), agent_id="ava", status="available"))
    log.step(at(5))
    assert holder(log, "c1") == "ava"


def test_a_snapshot_keeps_deactivation_and_an_old_one_reads_as_active() -> None:
    log = Log()
    log.extend([*agent("ava"), AgentDeactivated(at=at(1), agent_id="ava")])
    loaded = snapshot.load(snapshot.dump(log.state))
    assert loaded == log.state and not loaded.agents["ava"].active
    fresh = Log()
    fresh.extend(agent("bruno"))
    dumped = snapshot.dump(fresh.state)
    assert b"active" not in dumped  # the default is not written: older snapshots read the same
    assert snapshot.load(dumped).agents["bruno"].active


# --- random histories with deactivations ----------------------------------------------

LIFECYCLE_OPS = (*OPS, "round", "round", "accept", "deactivate", "reactivate", "resolve_by_agent")


def act_with_lifecycle(world: World, data: st.DataObject, op: str) -> None:
    """``test_properties.act`` plus deactivations, reactivations and resolutions naming the
    agent who held the conversation (which start a wrap-up)."""
    state = world.log.state
    events: list[LogEvent] = []
    if op in ("deactivate", "reactivate") and state.agents:
        agent_id = data.draw(st.sampled_from(sorted(state.agents)))
        kind = AgentDeactivated if op == "deactivate" else AgentReactivated
        events = [kind(at=world.now, agent_id=agent_id)]
    elif op == "resolve_by_agent":
        assigned = sorted(c for c, conv in state.conversations.items() if conv.status == "assigned")
        if assigned:
            conversation_id = data.draw(st.sampled_from(assigned))
            conv = state.conversations[conversation_id]
            events = [
                ConversationResolved(
                    at=world.now, customer_id=conv.customer_id, conversation_id=conversation_id, agent_id=conv.agent_id
                )
            ]
    else:
        act(world, data, op)
        return
    world.log.extend(events)
    check_holding(world.log)


def run_lifecycle_history(
    data: st.DataObject, policy: RouterPolicy, ops: list[str], make_world: Callable[[RouterPolicy], World] = World
) -> World:
    """``test_properties.run_history`` over ``LIFECYCLE_OPS`` (in a ``make_world`` world)."""
    world = make_world(policy)
    for _ in range(data.draw(st.integers(1, 4))):
        act(world, data, "hire")
    for op in ops:
        act_with_lifecycle(world, data, op)
    check_replay_and_snapshot(world)
    world.settle()
    check_exclusions(world)
    check_nobody_left_waiting(world)
    check_replay_and_snapshot(world)
    return world


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    policy=st.sampled_from(POLICIES),
    ops=st.lists(st.sampled_from(LIFECYCLE_OPS), min_size=20, max_size=80),
)
def test_random_histories_with_deactivations_keep_the_routing_invariants(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    """The invariants of ``test_properties`` (capacity, one holder, indexes agree with the
    facts, nothing missed, nobody left waiting, replay and snapshot), and once things settle
    a deactivated agent is offline and holds nothing."""
    world = run_lifecycle_history(data, policy, ops)
    for agent_id, view in world.log.state.agents.items():
        if not view.active:
            assert view.status == "offline" and not view.holding, agent_id
