"""``work_for_agent.best_waiting_for`` (the search over queue heads for a freed slot) gives
the answer of the simple search: every queue of the channel the agent fits, its first open
conversation in queue order, the best of those by rank. The fast search looks only at the
queues filed under the agent's lookups and ranks a head before checking the agent fits it;
neither may change the answer."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.effective import agent_fits, effective, tier_ceiling
from router.heaps import in_order
from router.index import conversation_valid
from router.matching import Rank, Round
from router.policy import RouterPolicy
from router.state import AgentView
from router.work_for_agent import best_waiting_for, open_head
from tests.unit.router.test_properties import OPS, POLICIES, World, act


def simple_search(rnd: Round, agent_id: str, agent: AgentView, channel: str) -> tuple[Rank, str] | None:
    state = rnd.state
    best: tuple[Rank, str] | None = None
    for key, heap in state.queues.items():
        sig = state.queue_signatures[key]
        if sig.channel != channel:
            continue
        eff = effective(sig, rnd.policy)
        if not agent_fits(agent, eff, tier_ceiling(state, eff)):
            continue
        for entry in in_order(heap):
            if not conversation_valid(state, entry) or entry[1] in rnd.taken:
                continue
            conv = state.conversations[entry[1]]
            if agent_id in conv.excluded:
                continue
            found = (rnd.rank(conv, sig, eff, entry[1]), entry[1])
            if best is None or found < best:
                best = found
            break
    return best


def check_every_agent(world: World) -> None:
    state = world.log.state
    rnd = Round(state, world.now, world.policy)
    for agent_id in sorted(state.agents):
        agent = state.agents[agent_id]
        for channel in agent.profile.capacity:
            fast = best_waiting_for(rnd, agent_id, agent, channel)
            expected = simple_search(rnd, agent_id, agent, channel)
            got = (fast.rank, fast.conversation_id) if fast is not None else None
            assert got == expected, (agent_id, channel)


# Random histories: a few agents hired, then operations with new conversations three times
# as likely as in the shared set (the searches are about waiting work).
HISTORIES = {
    "data": st.data(),
    "policy": st.sampled_from(POLICIES),
    "ops": st.lists(st.sampled_from([*OPS, "open", "open", "open"]), min_size=5, max_size=60),
}


def play(
    data: st.DataObject, policy: RouterPolicy, ops: list[str], after_each: Callable[[World], None] | None = None
) -> World:
    world = World(policy)
    for _ in range(data.draw(st.integers(1, 5))):
        act(world, data, "hire")
    for op in ops:
        act(world, data, op)
        if after_each is not None:
            after_each(world)
    return world


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**HISTORIES)
def test_the_search_over_queue_heads_finds_what_the_simple_search_finds(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    play(data, policy, ops, after_each=check_every_agent)


def check_a_round_giving_work_away(world: World) -> None:
    """Within one round, as conversations are decided on one after another (``rnd.taken``
    grows, as when a burst of new work is spread over the agents), the search still finds
    what the simple search finds, and each queue's open head (the walk resumed per round,
    ``work_for_agent.open_head``) is its first live conversation not decided on."""
    state = world.log.state
    rnd = Round(state, world.now, world.policy)
    agents = sorted(state.agents)
    for _ in range(len(state.conversations) + 1):
        decided = False
        for agent_id in agents:
            agent = state.agents[agent_id]
            for channel in agent.profile.capacity:
                fast = best_waiting_for(rnd, agent_id, agent, channel)
                expected = simple_search(rnd, agent_id, agent, channel)
                assert ((fast.rank, fast.conversation_id) if fast is not None else None) == expected
                if fast is not None:
                    rnd.taken.add(fast.conversation_id)
                    decided = True
            for key, heap in state.queues.items():
                first = next(
                    (e for e in in_order(heap) if conversation_valid(state, e) and e[1] not in rnd.taken), None
                )
                assert open_head(rnd, key) == first, key
        if not decided:
            return


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**HISTORIES)
def test_a_round_deciding_one_conversation_after_another_finds_what_the_simple_search_finds(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    check_a_round_giving_work_away(play(data, policy, ops))
