"""A conversation held for its case owner is judged again as soon as that agent stops
counting as its case owner, not only when the hold runs out.

Found by ``test_index_rebuild`` (``check_nothing_missed``): after an agent's profile change
the live state, which only looks at what changed, kept a conversation held for that agent,
while a cold copy of the same state (which looks at everything) let it go. The same held
also when the customer's case owner became another agent. Both are folded facts, so the
round right after them must act, exactly as a router restarted from a snapshot would.
"""

from __future__ import annotations

from datetime import datetime

from events.model import (
    AgentOffered,
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    ConversationEscalated,
    ConversationOpened,
    EscalationStepReached,
    MessageReceived,
    OfferAccepted,
    Requirements,
    RoutingRequested,
)
from router import snapshot
from router.decide import decide
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder

POLICY = RouterPolicy()  # offers on chat, a 30 s case-owner hold


def cold_decisions(log: Log, now: datetime) -> list[object]:
    """What a router restarted from a snapshot of this state would decide (it looks at everything)."""
    cold = snapshot.load(snapshot.dump(log.state))
    return [d.event for d in decide(cold, now, POLICY)]


def profiled(
    when: datetime, agent_id: str, language: str, capacity: dict[str, int], max_total: int | None = None
) -> AgentProfileUpdated:
    """A billing (level 1), tier 1 agent speaking one language, as the generator drew them."""
    profile = AgentProfile(skills={"billing": 1}, languages={language: 1}, capacity=capacity, max_total=max_total)
    return AgentProfileUpdated(at=when, agent_id=agent_id, profile=profile)


def held_for_ava(log: Log) -> None:
    """Customer 'k' is served by ava (full on chat); their second chat 'c2' waits for her
    although bob is free."""
    log.extend(agent("ava", capacity={"chat": 1}))
    log.extend(agent("bob", capacity={"chat": 2}))
    log.extend(conversation("c1", customer_id="k", skills={}, when=at(0)))
    offers = events_of(log.step(at(0), POLICY), AgentOffered)
    assert [(o.conversation_id, o.agent_id) for o in offers] == [("c1", "ava")]  # ties: by id
    log.append(OfferAccepted(at=at(1), customer_id="k", conversation_id="c1", agent_id="ava"))
    log.extend(conversation("c2", customer_id="k", skills={}, when=at(1)))
    assert log.step(at(2), POLICY) == []  # held for ava, within the hold
    assert log.state.conversations["c2"].is_held()


def test_a_hold_for_an_agent_whose_profile_no_longer_fits_ends_at_once() -> None:
    log = Log()
    held_for_ava(log)
    # ava now speaks only Spanish: she can no longer take c2 (English), so waiting for her
    # only delays the customer. bob takes it in the next round, not after the hold.
    log.append(
        AgentProfileUpdated(
            at=at(3),
            agent_id="ava",
            profile=AgentProfile(name="ava", skills={"billing": 3}, languages={"es": 5}, capacity={"chat": 1}),
        )
    )
    decisions = log.step(at(3), POLICY)
    assert [(o.conversation_id, o.agent_id) for o in events_of(decisions, AgentOffered)] == [("c2", "bob")]
    assert holder(log, "c2") == "bob"
    assert log.decide(at(3), POLICY) == [] and cold_decisions(log, at(3)) == []


def test_a_hold_for_an_agent_who_is_no_longer_the_case_owner_ends_at_once() -> None:
    log = Log()
    held_for_ava(log)
    # The customer's third chat names bob, who takes it: bob is the case owner now.
    log.extend(conversation("c3", customer_id="k", skills={}, when=at(3), preferred_agent="bob"))
    offers = events_of(log.step(at(3), POLICY), AgentOffered)
    assert [(o.conversation_id, o.agent_id) for o in offers] == [("c3", "bob")]
    log.append(OfferAccepted(at=at(4), customer_id="k", conversation_id="c3", agent_id="bob"))
    # c2 was held for ava as the case owner; she no longer is, and bob has room.
    decisions = log.step(at(4), POLICY)
    assert [(o.conversation_id, o.agent_id) for o in events_of(decisions, AgentOffered)] == [("c2", "bob")]
    assert log.decide(at(4), POLICY) == [] and cold_decisions(log, at(4)) == []


def test_the_history_hypothesis_found() -> None:
    """The shrunk history from ``test_incremental_indexes_equal_indexes_rebuilt_from_the_facts``
    (decide rounds between the events as the generator ran them). Nobody else can take c2
    once its case owner a0 no longer speaks its language: it joins the general queue."""
    log = Log()
    t0, t1 = at(0), at(1)
    en_chat = Requirements(skills={}, language="en")
    log.append(profiled(t0, "a0", "en", {"chat": 1, "email": 0}, max_total=1))
    log.append(AgentStatusChanged(at=t0, agent_id="a0", status="available"))
    log.append(profiled(t0, "a1", "en", {"chat": 0, "email": 0}))
    log.append(AgentStatusChanged(at=t0, agent_id="a1", status="available"))
    log.append(ConversationOpened(at=t0, customer_id="k0", conversation_id="c1", channel="chat", contact="x"))
    log.append(RoutingRequested(at=t0, customer_id="k0", conversation_id="c1", channel="chat", requirements=en_chat))
    for _ in range(2):
        log.append(ConversationEscalated(at=t0, customer_id="k0", conversation_id="c1", to_tier=1))
    assert [o.agent_id for o in events_of(log.step(t0, POLICY), AgentOffered)] == ["a0"]
    log.append(OfferAccepted(at=t1, customer_id="k0", conversation_id="c1", agent_id="a0"))
    log.append(profiled(t1, "a0", "en", {"chat": 0, "email": 0, "sms": 0}))
    log.append(ConversationEscalated(at=t1, customer_id="k0", conversation_id="c1", from_agent="a0", to_tier=1))
    for _ in range(2):
        log.append(ConversationEscalated(at=t1, customer_id="k0", conversation_id="c1", to_tier=1))
    log.append(ConversationOpened(at=t1, customer_id="k0", conversation_id="c2", channel="chat", contact="x"))
    log.append(RoutingRequested(at=t1, customer_id="k0", conversation_id="c2", channel="chat", requirements=en_chat))
    assert log.step(t1, POLICY) == []  # c2 waits for a0, the case owner
    log.append(
        MessageReceived(
            at=t1, customer_id="k0", conversation_id="c1", channel="chat", message_id="m", provider_message_id="p"
        )
    )
    log.append(profiled(t1, "a0", "es", {"chat": 0, "email": 0}))
    decisions = log.step(t1, POLICY)
    steps = [(e.conversation_id, e.step, e.relaxation) for e in events_of(decisions, EscalationStepReached)]
    assert steps == [("c2", 0, "drop_preferred")]
    assert not log.state.conversations["c2"].is_held()
    assert log.decide(t1, POLICY) == [] and cold_decisions(log, t1) == []
