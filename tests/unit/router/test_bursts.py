"""Bursts: a round is bounded, and every conversation ends up with exactly one agent."""

from __future__ import annotations

from collections import Counter

from events.model import AgentOffered, ConversationAssigned, OfferAccepted
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation


def test_a_round_makes_at_most_max_decisions_and_the_next_rounds_finish_the_work() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 50}))
    for n in range(25):
        log.extend(conversation(f"c{n}", when=at(n / 100)))
    policy = RouterPolicy(offer_channels=(), escalation_steps=(), max_decisions_per_call=10)
    assert [len(log.step(at(1), policy)) for _ in range(4)] == [10, 10, 5, 0]


def test_a_burst_of_500_conversations_is_assigned_exactly_once_each() -> None:
    log = Log()
    for n in range(40):
        log.extend(
            agent(f"a{n:02}", skills={"billing": 1 + n % 5}, languages={"en": 5, "es": 3} if n % 3 else {"es": 5})
        )
    for n in range(500):
        log.extend(conversation(f"c{n:03}", language="es" if n % 4 == 0 else "en", when=at(n / 50)))
    given: Counter[str] = Counter()
    now = 10.0
    for _ in range(40):
        decisions = log.step(at(now), RouterPolicy(max_decisions_per_call=100))
        for d in decisions:
            if isinstance(d.event, AgentOffered):
                given[d.event.conversation_id] += 1
                # Every offer is accepted at once; then the agent resolves nothing: capacity fills.
                log.append(
                    OfferAccepted(
                        at=at(now),
                        customer_id=d.event.customer_id,
                        conversation_id=d.event.conversation_id,
                        agent_id=d.event.agent_id,
                    )
                )
            elif isinstance(d.event, ConversationAssigned):
                given[d.event.conversation_id] += 1
        now += 1
    assert set(given.values()) == {1}
    capacity = sum(a.profile.capacity.get("chat", 0) for a in log.state.agents.values())
    assert len(given) == min(500, capacity) == 120
    for view in log.state.agents.values():
        assert view.load.get("chat", 0) <= view.profile.capacity["chat"]
