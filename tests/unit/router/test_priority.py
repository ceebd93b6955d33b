"""Queue order: priority, customer tiers and flags, public posts, aging, SLA."""

from __future__ import annotations

from datetime import timedelta

from events.model import ConversationResolved, CustomerProfileUpdated
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, holder

POLICY = RouterPolicy(offer_channels=(), escalation_steps=(), aging_seconds=60)


def busy_agent_then_free(log: Log, tier: int = 1) -> None:
    """One agent with one slot, taken by 'c0'; later queue entries compete for it."""
    log.extend(agent("ava", tier=tier, capacity={"chat": 1}))
    log.extend(conversation("c0", when=at(0)))
    log.step(at(0), POLICY)
    assert holder(log, "c0") == "ava"


def free_the_slot(log: Log, when: float) -> None:
    log.append(ConversationResolved(at=at(when), customer_id="cu-c0", conversation_id="c0"))


def test_higher_priority_goes_first() -> None:
    log = Log()
    busy_agent_then_free(log)
    log.extend(conversation("low", priority=0, when=at(1)))
    log.extend(conversation("high", priority=5, when=at(2)))
    free_the_slot(log, 3)
    log.step(at(3), POLICY)
    assert holder(log, "high") == "ava"


def test_equal_priority_goes_in_arrival_order() -> None:
    log = Log()
    busy_agent_then_free(log)
    log.extend(conversation("second", when=at(2)))
    log.extend(conversation("first", when=at(1)))
    free_the_slot(log, 3)
    log.step(at(3), POLICY)
    assert holder(log, "first") == "ava"


def test_platinum_customer_jumps_the_queue() -> None:
    log = Log()
    busy_agent_then_free(log, tier=2)  # platinum needs tier 2 by default
    log.extend(conversation("standard", customer_id="s", when=at(1)))
    log.append(CustomerProfileUpdated(at=at(2), customer_id="p", tier="platinum"))
    log.extend(conversation("platinum", customer_id="p", when=at(3)))
    free_the_slot(log, 4)
    log.step(at(4), POLICY)
    assert holder(log, "platinum") == "ava"


def test_platinum_customer_needs_a_specialist() -> None:
    log = Log()
    log.extend(agent("ava", tier=1))
    log.append(CustomerProfileUpdated(at=at(0), customer_id="p", tier="platinum"))
    log.extend(conversation("c1", customer_id="p", when=at(1)))
    assert log.step(at(2), POLICY) == []
    log.extend(agent("chen", tier=2, when=at(3)))
    log.step(at(3), POLICY)
    assert holder(log, "c1") == "chen"


def test_profile_update_while_waiting_applies_to_the_waiting_conversation() -> None:
    log = Log()
    busy_agent_then_free(log, tier=2)
    log.extend(conversation("early", customer_id="e", when=at(1)))
    log.extend(conversation("late", customer_id="m", when=at(2)))
    log.append(CustomerProfileUpdated(at=at(3), customer_id="m", flags=("media_attention",)))
    free_the_slot(log, 4)
    log.step(at(4), POLICY)
    assert holder(log, "late") == "ava"


def test_flagged_customer_goes_to_a_specialist_at_top_priority() -> None:
    log = Log()
    log.extend(agent("ava", tier=1))
    log.extend(agent("chen", tier=2))
    log.append(CustomerProfileUpdated(at=at(0), customer_id="r", flags=("regulatory_risk",)))
    log.extend(conversation("c1", customer_id="r", when=at(1)))
    log.step(at(2), POLICY)
    assert holder(log, "c1") == "chen"
    reason = log.state.conversations["c1"].reason
    assert reason is not None and reason.score["priority"] >= 1000


def test_unknown_flags_change_nothing() -> None:
    log = Log()
    log.extend(agent("ava", tier=1))
    log.append(CustomerProfileUpdated(at=at(0), customer_id="x", flags=("likes_cats",)))
    log.extend(conversation("c1", customer_id="x", when=at(1)))
    log.step(at(2), POLICY)
    assert holder(log, "c1") == "ava"


def test_public_social_post_gets_a_boost() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"social": 1}))
    log.extend(conversation("c0", channel="social", when=at(0)))
    log.step(at(0), POLICY)
    log.extend(conversation("private", channel="social", when=at(1)))
    log.extend(conversation("public", channel="social", public=True, when=at(2)))
    free_the_slot(log, 3)
    log.step(at(3), POLICY)
    assert holder(log, "public") == "ava"


def test_aging_lets_a_long_waiting_conversation_overtake_higher_priority() -> None:
    log = Log()
    busy_agent_then_free(log)
    log.extend(conversation("old-low", priority=0, when=at(0)))
    log.extend(conversation("new-high", priority=2, when=at(290)))
    free_the_slot(log, 300)  # old-low waited 5 min: +5 points
    log.step(at(300), POLICY)
    assert holder(log, "old-low") == "ava"


def test_nearer_sla_due_goes_first_at_equal_priority() -> None:
    log = Log()
    busy_agent_then_free(log)
    log.extend(conversation("relaxed", when=at(1), sla_due=at(1) + timedelta(hours=4)))
    log.extend(conversation("urgent", when=at(2), sla_due=at(2) + timedelta(seconds=30)))
    free_the_slot(log, 3)
    log.step(at(3), POLICY)
    assert holder(log, "urgent") == "ava"
