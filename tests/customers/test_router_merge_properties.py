"""The router's hypothesis properties (capacity, one holder, indexes, replay and snapshot,
nothing missed, nobody left waiting) with merges of customers mixed into the random
histories, plus: every open conversation counts for exactly its surviving customer."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.model import CustomersMerged
from router.policy import RouterPolicy
from tests.unit.router.test_properties import (
    OPS,
    POLICIES,
    World,
    act,
    check_holding,
    check_indexes,
    check_nobody_left_waiting,
    check_replay_and_snapshot,
)

OPS_WITH_MERGES = (*OPS, "merge", "merge")


def check_open_conversations_follow_survivors(world: World) -> None:
    state = world.log.state
    for customer_id, customer in state.customers.items():
        if customer.merged_into is not None:
            assert not customer.open_conversations, customer_id
    for conversation_id, conv in state.conversations.items():
        survivor = state.customer(conv.customer_id)
        assert survivor is not None and survivor.merged_into is None
        assert conversation_id in survivor.open_conversations
    counted = [c for view in state.customers.values() for c in view.open_conversations]
    assert sorted(counted) == sorted(set(counted)) and set(counted) <= set(state.conversations)


def act_with_merges(world: World, data: st.DataObject, op: str) -> None:
    if op != "merge":
        act(world, data, op)
        return
    survivor, merged = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
    world.log.append(CustomersMerged(at=world.now, customer_id=f"k{survivor}", merged_id=f"k{merged}"))
    check_holding(world.log)
    check_indexes(world.log)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    policy=st.sampled_from(POLICIES),
    ops=st.lists(st.sampled_from(OPS_WITH_MERGES), min_size=5, max_size=80),
)
def test_random_histories_with_merges_keep_the_routing_invariants(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    world = World(policy)
    for _ in range(data.draw(st.integers(1, 4))):
        act(world, data, "hire")
    for op in ops:
        act_with_merges(world, data, op)
        check_open_conversations_follow_survivors(world)
    check_replay_and_snapshot(world)
    world.settle()
    check_nobody_left_waiting(world)
    check_replay_and_snapshot(world)
    check_open_conversations_follow_survivors(world)
