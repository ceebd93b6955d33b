"""``router.queue_refs``, the records the freed agent's search reads queue heads through, kept
up by the fold once decide has asked for them: after any random history of events and decide
rounds (the generator of ``test_properties``) they hold what records built afresh from the
queues hold (every queue's top entry, the same queues under every channel, skill, language and
group as ``queue_lookup``); the search through them finds what ``test_work_for_agent``'s simple
search finds, also for queues ordered by an explicit SLA due time.
Also the fold's inlined ``free_channels`` against ``AgentView.free_on``."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.model import (
    AgentOffered,
    AgentProfile,
    AgentStatusChanged,
    ConversationOpened,
    OfferDeclined,
    Requirements,
    RoutingRequested,
)
from router.index_keys import agent_lookups, free_channels
from router.policy import RouterPolicy
from router.queue_refs import QueueRefs, agent_groups, queue_refs
from router.state import AgentView, RouterState
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder
from tests.unit.router.test_properties import OPS, POLICIES, World, act, profiles
from tests.unit.router.test_work_for_agent import check_every_agent


def layout(refs: QueueRefs) -> dict[tuple[str, str, str, str, int], list[tuple[str, tuple[float, str, int]]]]:
    """(channel, skill, language, other skill, minimum) -> sorted (queue key, top entry) there."""
    return {
        (channel, skill, language, other, floor): sorted((ref.key, ref.top) for ref in listed)
        for channel, by_skill in refs.tree.items()
        for skill, by_language in by_skill.items()
        for language, by_other in by_language.items()
        for other, by_floor in by_other.items()
        for floor, listed in by_floor.items()
    }


# A few requirements only, so that queues hold several conversations and their tops change
# as the first ones leave (``act``'s own draws rarely share a queue).
SHARED = (
    Requirements(skills={"billing": 1}, language="en"),
    Requirements(skills={"billing": 2, "technical": 1}, language="en", priority=1),
    Requirements(skills={"technical": 1}),
    # Ordered by its due time, not its waiting time: never ranked from the top's time alone.
    Requirements(skills={"billing": 1}, language="en", sla_due=at(600)),
)


def open_shared(world: World, data: st.DataObject) -> None:
    world.conversations += 1
    ids = {
        "at": world.now,
        "customer_id": f"k{data.draw(st.integers(0, 3))}",
        "conversation_id": f"c{world.conversations}",
    }
    channel = data.draw(st.sampled_from(("chat", "email")))
    world.log.extend(
        [
            ConversationOpened(**ids, channel=channel, contact="x"),  # type: ignore[arg-type]
            RoutingRequested(**ids, channel=channel, requirements=data.draw(st.sampled_from(SHARED))),  # type: ignore[arg-type]
        ]
    )
    world.clock += 1.0


def check_kept(state: RouterState) -> None:
    kept = queue_refs(state)
    fresh = QueueRefs(state)
    assert layout(kept) == layout(fresh)
    assert {key: (ref.top, ref.since) for key, ref in kept.by_key.items()} == {
        key: (heap[0], heap[0][0]) for key, heap in state.queues.items()
    }
    for key, ref in kept.by_key.items():
        assert ref.top is state.queues[key][0]  # the very entry: the search checks it is live


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    policy=st.sampled_from(POLICIES),
    ops=st.lists(st.sampled_from([*OPS, "shared", "shared", "shared", "resolve", "round"]), min_size=5, max_size=60),
)
def test_the_records_kept_by_the_fold_match_records_built_afresh(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    world = World(policy)
    for _ in range(data.draw(st.integers(1, 4))):
        act(world, data, "hire")
    queue_refs(world.log.state)  # kept from here on, as after decide's first round
    for op in ops:
        if op == "shared":
            open_shared(world, data)
        else:
            act(world, data, op)
        check_kept(world.log.state)
        check_every_agent(world)  # and the search through them finds what the simple one finds


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), policy=st.sampled_from(POLICIES), ops=st.lists(st.sampled_from(OPS), min_size=5, max_size=40))
def test_an_agent_walks_the_queues_filed_under_its_lookups(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    """The search walks the records of exactly the queues ``queue_lookup`` files under the
    lookup keys and groups ``agent_lookups`` names (as often as they are filed there)."""
    world = World(policy)
    for _ in range(data.draw(st.integers(1, 4))):
        act(world, data, "hire")
    for op in (*ops, "shared", "shared"):
        if op == "shared":
            open_shared(world, data)
        else:
            act(world, data, op)
    state = world.log.state
    refs = queue_refs(state)
    for agent_id, view in sorted(state.agents.items()):
        for channel in view.profile.capacity:
            expected = sorted(
                key
                for lookup, groups in agent_lookups(state, agent_id, view, channel)
                for group in groups
                for key in state.queue_lookup.get(lookup, {}).get(group, ())
            )
            walked = sorted(ref.key for listed in agent_groups(refs, view, channel) for ref in listed)
            assert walked == expected


def test_a_declined_conversation_goes_back_on_top_of_its_queue_for_the_next_freed_agent() -> None:
    """The older conversation is offered, declined, and filed again ahead of a newer one in the
    same queue: the next agent whose slot frees gets the older one."""
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1))
    assert holder(log, "c1") == "ava"
    log.extend(conversation("c2", when=at(2)))
    log.extend(agent("bo", capacity={"chat": 1}, status="away"))
    log.append(AgentStatusChanged(at=at(3), agent_id="ava", status="away"))
    log.append(OfferDeclined(at=at(3), customer_id="cu-c1", conversation_id="c1", agent_id="ava"))
    check_kept(log.state)  # c1 is the queue's top again
    log.append(AgentStatusChanged(at=at(4), agent_id="bo", status="available"))
    offered = events_of(log.step(at(4)), AgentOffered)
    assert [(e.conversation_id, e.agent_id) for e in offered] == [("c1", "bo")]


@settings(max_examples=300, deadline=None)
@given(profile=profiles, load=st.dictionaries(st.sampled_from(("chat", "email", "sms")), st.integers(0, 4)))
def test_the_fold_finds_the_channels_an_agent_has_room_on_as_free_on_does(
    profile: AgentProfile, load: dict[str, int]
) -> None:
    """``index_keys.free_channels`` (inlined for the fold) against ``AgentView.free_on``."""
    view = AgentView(profile=profile, load=load)
    assert free_channels(view) == [channel for channel in profile.capacity if view.free_on(channel) > 0]
