"""Wrap-up time: after an agent resolves a conversation on a channel, that slot stays taken
for ``RouterPolicy.wrap_up_seconds[channel]``; when it ends, waiting work is offered to her
without any new event (decide is called with a later time, as the runner's tick does)."""

from __future__ import annotations

from collections import Counter

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.model import AgentOffered, AgentProfileUpdated, ConversationAssigned, ConversationResolved, OfferAccepted
from router import snapshot, wrap_up
from router.decide import Decision, decide
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder
from tests.unit.router.test_deactivation import LIFECYCLE_OPS, run_lifecycle_history
from tests.unit.router.test_properties import (
    POLICIES,
    World,
)

WRAP = RouterPolicy(offer_channels=("chat",), wrap_up_seconds={"chat": 30.0})


def served_and_resolved(log: Log, policy: RouterPolicy, *, resolved_at: float, by: str | None = "ava") -> None:
    """c1 offered to ava at 0, accepted at 1, resolved at ``resolved_at`` (naming ``by``)."""
    log.extend(conversation("c1", customer_id="k1"))
    log.step(at(0), policy)
    assert holder(log, "c1") == "ava"
    log.append(OfferAccepted(at=at(1), customer_id="k1", conversation_id="c1", agent_id="ava"))
    log.append(ConversationResolved(at=at(resolved_at), customer_id="k1", conversation_id="c1", agent_id=by))


def test_the_slot_stays_taken_until_the_wrap_up_ends_then_waiting_work_is_offered() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    served_and_resolved(log, WRAP, resolved_at=10)
    log.extend(conversation("c2", customer_id="k2", when=at(12)))
    assert log.step(at(12), WRAP) == []
    assert log.step(at(39.9), WRAP) == []
    entries = len(log.entries)
    [offer] = events_of(log.step(at(40), WRAP), AgentOffered)  # no event came in between: only time
    assert len(log.entries) == entries + 1
    assert (offer.agent_id, offer.conversation_id) == ("ava", "c2")


def test_without_wrap_up_time_the_slot_is_free_at_once() -> None:
    policy = RouterPolicy(offer_channels=("chat",))  # the default: wrap_up_seconds = {}
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    served_and_resolved(log, policy, resolved_at=10)
    log.extend(conversation("c2", customer_id="k2", when=at(11)))
    log.step(at(11), policy)
    assert holder(log, "c2") == "ava"


def test_another_free_agent_takes_the_work_meanwhile() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    served_and_resolved(log, WRAP, resolved_at=10)
    log.extend(agent("bruno", capacity={"chat": 1}, when=at(11)))
    log.extend(conversation("c2", customer_id="k2", when=at(12)))
    log.step(at(12), WRAP)
    assert holder(log, "c2") == "bruno"


def test_wrap_up_is_per_channel_unless_an_overall_cap_binds() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1, "email": 1}))
    served_and_resolved(log, WRAP, resolved_at=10)
    log.extend(conversation("mail", customer_id="k2", channel="email", when=at(12)))
    log.step(at(12), WRAP)
    assert holder(log, "mail") == "ava"  # chat's wrap-up does not hold email

    capped = Log()
    capped.extend(agent("ava", capacity={"chat": 1, "email": 1}))
    one_in_all = msgspec.structs.replace(capped.state.agents["ava"].profile, max_total=1)
    capped.append(AgentProfileUpdated(at=at(0), agent_id="ava", profile=one_in_all))
    served_and_resolved(capped, WRAP, resolved_at=10)
    capped.extend(conversation("mail", customer_id="k2", channel="email", when=at(12)))
    assert capped.step(at(12), WRAP) == []  # one slot in all, and it is in wrap-up
    [assigned] = events_of(capped.step(at(40), WRAP), ConversationAssigned)
    assert assigned.agent_id == "ava"


def test_no_wrap_up_when_the_resolution_names_no_agent_or_she_only_had_an_offer() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    served_and_resolved(log, WRAP, resolved_at=10, by=None)
    assert not log.state.agents["ava"].wrap_up

    offered = Log()
    offered.extend(agent("ava", capacity={"chat": 1}))
    offered.extend(conversation("c1", customer_id="k1"))
    offered.step(at(0), WRAP)
    offered.append(ConversationResolved(at=at(5), customer_id="k1", conversation_id="c1", agent_id="ava"))
    assert not offered.state.agents["ava"].wrap_up


def test_a_state_loaded_from_a_snapshot_mid_wrap_up_wakes_when_it_ends() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    served_and_resolved(log, WRAP, resolved_at=10)
    log.extend(conversation("c2", customer_id="k2", when=at(12)))
    loaded = snapshot.load(snapshot.dump(log.state))
    assert decide(loaded, at(20), WRAP) == []
    [decision] = decide(loaded, at(41), WRAP)
    assert isinstance(decision.event, AgentOffered) and decision.event.agent_id == "ava"


def test_only_the_newest_wrap_ups_up_to_the_capacity_are_kept() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 2}))
    for n in range(4):
        cid, customer = f"c{n}", f"k{n}"
        log.extend(conversation(cid, customer_id=customer, when=at(100 * n)))
        log.step(at(100 * n), WRAP)
        log.append(OfferAccepted(at=at(100 * n + 1), customer_id=customer, conversation_id=cid, agent_id="ava"))
        log.append(ConversationResolved(at=at(100 * n + 2), customer_id=customer, conversation_id=cid, agent_id="ava"))
    assert log.state.agents["ava"].wrap_up["chat"] == [at(202), at(302)]
    assert wrap_up.room(log.state.agents["ava"], "chat", at(310).timestamp(), WRAP) == 1
    assert wrap_up.room(log.state.agents["ava"], "chat", at(332).timestamp(), WRAP) == 2


# --- random histories under a wrap-up policy ---------------------------------------------


class WrapWorld(World):
    """Every round also checks that nobody is given work in a slot still in wrap-up."""

    def round(self, race: int | None = None) -> list[Decision]:
        state = self.log.state
        now_ts = self.now.timestamp()
        room = {
            (agent_id, channel): wrap_up.room(view, channel, now_ts, self.policy)
            for agent_id, view in state.agents.items()
            for channel in view.profile.capacity
        }
        decisions = super().round(race)
        given: Counter[tuple[str, str]] = Counter()
        for decision in decisions:
            event = decision.event
            if isinstance(event, AgentOffered | ConversationAssigned):
                conv = state.conversations.get(event.conversation_id)
                if conv is not None:
                    given[(event.agent_id, conv.channel)] += 1
        for key, n in given.items():
            assert n <= room.get(key, 0), f"{key} given {n} with {room.get(key, 0)} free (wrap-up counted)"
        return decisions


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    policy=st.sampled_from(POLICIES),
    ops=st.lists(st.sampled_from((*LIFECYCLE_OPS, "resolve_by_agent", "resolve_by_agent")), min_size=20, max_size=80),
)
def test_random_histories_with_wrap_ups_keep_the_routing_invariants(
    data: st.DataObject, policy: RouterPolicy, ops: list[str]
) -> None:
    """The invariants of ``test_properties`` under a wrap-up policy, above all: when the
    live state (which only looks at what changed, and at wrap-ups ending) finds nothing to
    do, a state loaded from its snapshot (which looks at everything) finds nothing either."""
    policy = msgspec.structs.replace(policy, wrap_up_seconds={"chat": 30.0, "email": 300.0, "sms": 5.0})
    run_lifecycle_history(data, policy, ops, WrapWorld)
