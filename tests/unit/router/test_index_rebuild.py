"""The indexes the fold keeps up incrementally (an event touches only the keys it changes:
free-agent entries left in place when an agent only got busier, live counts, queue groups)
hold exactly what indexes rebuilt from the facts alone would hold, after any random history
of events and decide rounds (the generator of ``test_properties``).

Compared is what the indexes mean, not their bytes: the live entries of each heap as they
rank now (stale entries are allowed, within the compaction bound), counts and lookups.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import index, snapshot
from router.heaps import in_true_order
from router.policy import RouterPolicy
from router.state import RouterState
from tests.unit.router.helpers import Log, agent, at, conversation, holder
from tests.unit.router.test_properties import OPS, POLICIES, World, act


def rebuilt(state: RouterState) -> RouterState:
    """A copy of ``state`` whose indexes are filed again from the facts (agents, conversations)."""
    fresh = snapshot.load(snapshot.dump(state))
    fresh.step_plan = state.step_plan  # decide's, not snapshotted: files step timers as the live state does
    fresh.queues, fresh.queue_signatures, fresh.queue_sizes, fresh.queue_lookup = {}, {}, {}, {}
    fresh.queued = 0
    fresh.held, fresh.held_timers, fresh.step_timers, fresh.offer_timers = {}, [], {}, []
    fresh.free_agents, fresh.free_live, fresh.capable = {}, {}, {}
    for agent_id in sorted(fresh.agents):
        index.agent_changed(fresh, agent_id, fresh.agents[agent_id])
    for conversation_id in sorted(fresh.conversations):
        conv = fresh.conversations[conversation_id]
        if conv.status == "waiting":
            index.enter_queue(fresh, conversation_id, conv)
        elif conv.status == "offered":
            index.offer_made(fresh, conversation_id, conv)
    return fresh


def meaning(state: RouterState) -> dict[str, Any]:
    """What the indexes say, independent of how they got there."""
    free: dict[str, list[tuple[int, float, float, str, int]]] = {}
    for key, heap in state.free_agents.items():
        channel = key.split("|", 1)[0]
        live = sorted(e for e in (index.current_entry(state, entry, channel) for entry in heap) if e is not None)
        if live:
            free[key] = live
    queues = {
        key: sorted((e[0], e[1]) for e in heap if index.conversation_valid(state, e))
        for key, heap in state.queues.items()
    }
    held = {
        agent_id: sorted((e[0], e[1]) for e in heap if index.conversation_valid(state, e))
        for agent_id, heap in state.held.items()
    }
    return {
        "free": free,
        "free_live": state.free_live,
        "capable": state.capable,
        "queues": {key: members for key, members in queues.items() if members},
        "queue_sizes": state.queue_sizes,
        "queued": state.queued,
        "signatures": state.queue_signatures,
        "lookup": {
            lookup: {group: sorted(keys) for group, keys in groups.items()}
            for lookup, groups in state.queue_lookup.items()
        },
        "held": {agent_id: members for agent_id, members in held.items() if members},
        "held_timers": sorted((e[0], e[1]) for e in state.held_timers if index.conversation_valid(state, e)),
        "step_timers": sorted(
            (step, e[0], e[1])
            for step, timers in state.step_timers.items()
            for e in timers
            if index.conversation_valid(state, e)
        ),
        "offer_timers": sorted((e[0], e[1]) for e in state.offer_timers if index.offer_valid(state, e)),
    }


def check_rebuild(log: Log) -> None:
    state = log.state
    assert meaning(state) == meaning(rebuilt(state))
    for key, heap in state.free_agents.items():
        # Lazy deletion stays bounded: stale entries never outnumber live ones by much.
        assert len(heap) <= 2 * state.free_live[key] + 64, key
        channel = key.split("|", 1)[0]

        def now(entry: tuple[int, float, float, str, int], channel: str = channel) -> Any:
            return index.current_entry(state, entry, channel)

        # An entry left in place never ranks its agent better than the agent ranks now, so
        # readers walking the heap see the agents in their true order.
        for entry in heap:
            current = now(entry)
            assert current is None or current >= entry, (key, entry, current)
        assert list(in_true_order(heap, now)) == sorted(e for e in map(now, heap) if e is not None)
        # The fold keeps each top as its agent ranks now (``index.settle_top``): a search that
        # takes the best free agent walks one entry, not every entry ranking its agent too well.
        assert not heap or now(heap[0]) is heap[0], (key, heap[0], now(heap[0]))
    assert set(state.free_agents) <= set(state.free_live)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), policy=st.sampled_from(POLICIES), ops=st.lists(st.sampled_from(OPS), min_size=5, max_size=80))
def test_incremental_indexes_equal_indexes_rebuilt_from_the_facts(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    world = World(policy)
    for _ in range(data.draw(st.integers(1, 5))):
        act(world, data, "hire")
    for op in ops:
        act(world, data, op)
        check_rebuild(world.log)
    world.settle()
    check_rebuild(world.log)


def test_an_agent_who_only_got_busier_keeps_its_entries_and_ranks_as_it_is_now() -> None:
    """Taking work pushes nothing for the agent: its entry on top of the heap is re-ranked in
    place (``index.settle_top``), behind an idler colleague, so the next search starts at the
    colleague; an entry of hers deeper in a heap stays as it was, ranking her too well, and
    readers re-rank it (``heaps.in_true_order``)."""
    log = Log()
    for agent_id in ("a1", "a2"):
        log.extend(agent(agent_id, skills={"billing": 3}, languages={"en": 5}, capacity={"chat": 3}))
    key = index.agent_key("chat", "billing", "en", 1, 3)
    pushed = len(log.state.free_agents[key])
    log.extend(conversation("c1", skills={"billing": 1}, language="en", channel="chat", when=at(1)))
    log.step(at(2))
    busier = holder(log, "c1")
    assert busier is not None
    idler = next(iter({"a1", "a2"} - {busier}))
    heap = log.state.free_agents[key]
    assert len(heap) == pushed  # nothing pushed for the busier agent
    assert heap[0][3] == idler and index.current_entry(log.state, heap[0], "chat") is heap[0]
    walked = in_true_order(heap, lambda e: index.current_entry(log.state, e, "chat"))
    assert [entry[3] for entry in walked] == [idler, busier]
    check_rebuild(log)


def test_a_colleague_left_ranking_too_well_is_re_ranked_when_she_reaches_the_top() -> None:
    """An agent who took work while not on top of a heap keeps an entry there that ranks her
    too well; when the agents ahead of her take work and their entries move down, hers comes
    up and is re-ranked then (``settle_top``), so every top ranks its agent as it is."""
    log = Log()
    for agent_id in ("a1", "a2", "a3"):
        log.extend(agent(agent_id, skills={"billing": 3}, languages={"en": 5}, capacity={"chat": 3}))
    for n in range(1, 5):  # one round: the best free agent takes all of it while she has room
        log.extend(conversation(f"c{n}", skills={"billing": 1}, language="en", channel="chat", when=at(1)))
    log.step(at(2))
    for n in range(5, 9):
        log.extend(conversation(f"c{n}", skills={"billing": 1}, language="en", channel="chat", when=at(3)))
        log.step(at(3 + n))
        check_rebuild(log)  # includes: each top ranks its agent as it ranks now
