"""A read model (the API's view, delivery's facts) folds the log ``reading_only``: without
decide's agent-side indexes, timers and marks. After any random history it must still serve
exactly what a full fold serves: the agents, conversations and customers, and the queues."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.explain import explained_queues, waiting_because
from router.fold import evolve
from router.policy import RouterPolicy
from router.queues import held_summaries, queue_summaries
from router.state import RouterState, reading_only
from tests.unit.router.test_deactivation import LIFECYCLE_OPS, act_with_lifecycle
from tests.unit.router.test_properties import OPS, POLICIES, World, act


def served(state: RouterState, now_ts: float, policy: RouterPolicy) -> dict[str, Any]:
    now = datetime.fromtimestamp(now_ts, UTC)
    agents = {aid: msgspec.structs.replace(agent, version=0) for aid, agent in state.agents.items()}
    return {
        "agents": msgspec.to_builtins(agents),
        "conversations": msgspec.to_builtins(state.conversations),
        "customers": msgspec.to_builtins(state.customers),
        "queues": msgspec.to_builtins(queue_summaries(state, now_ts, policy)),
        "held": msgspec.to_builtins(held_summaries(state, now_ts)),
        # Why work waits is worked out from the facts alone, so a read model explains the same.
        "explained": msgspec.to_builtins(explained_queues(state, queue_summaries(state, now_ts, policy), now, policy)),
        "why": {
            cid: msgspec.to_builtins(waiting_because(state, conv, now, policy))
            for cid, conv in state.conversations.items()
        },
        "last_seq": state.last_seq,
    }


def read_fold(world: World) -> RouterState:
    state = reading_only(RouterState())
    for seq, subject, event in world.log.entries:
        state = evolve(state, seq, subject, event)
    return state


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), policy=st.sampled_from(POLICIES), ops=st.lists(st.sampled_from(OPS), min_size=5, max_size=80))
def test_a_read_model_serves_what_the_full_fold_serves(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    world = World(policy)
    for _ in range(data.draw(st.integers(1, 5))):
        act(world, data, "hire")
    for op in ops:
        act(world, data, op)
    now_ts = world.now.timestamp()
    reader = read_fold(world)
    assert served(reader, now_ts, policy) == served(world.log.replay(), now_ts, policy)
    # What it leaves out, it leaves out: no agent-side index, no timers, no marks piling up.
    assert not reader.free_agents and not reader.capable and not reader.offer_timers and not reader.step_timers
    assert not reader.pending.queues and not reader.pending.agents


def test_a_loaded_state_is_a_full_one_until_marked() -> None:
    state = reading_only(RouterState())
    assert state.for_reading
    from router import snapshot

    assert not snapshot.load(snapshot.dump(state)).for_reading


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    policy=st.sampled_from(POLICIES),
    ops=st.lists(st.sampled_from(LIFECYCLE_OPS), min_size=10, max_size=80),
)
def test_with_deactivations_and_wrap_ups_the_read_model_still_agrees(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    """Deactivations, reactivations and resolutions by the holding agent (a wrap-up) fold the
    same in a read model as in the router, under a policy with wrap-up time too."""
    policy = msgspec.structs.replace(policy, wrap_up_seconds={"chat": 30.0, "email": 300.0})
    world = World(policy)
    for _ in range(data.draw(st.integers(1, 5))):
        act(world, data, "hire")
    for op in ops:
        act_with_lifecycle(world, data, op)
    now_ts = world.now.timestamp()
    reader = read_fold(world)
    assert served(reader, now_ts, policy) == served(world.log.replay(), now_ts, policy)
    assert not reader.free_agents and not reader.capable and not reader.pending.wrap_ups
