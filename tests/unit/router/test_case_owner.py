"""Case ownership: a returning customer goes back to the agent who owns the case."""

from __future__ import annotations

from events.model import AgentStatusChanged, ConversationResolved, EscalationStepReached
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder

POLICY = RouterPolicy(offer_channels=(), escalation_steps=(), case_owner_wait_seconds=30)


def owned_by_bob(log: Log) -> None:
    """Customer 'k' had conversation 'first' with bob, resolved at t=10."""
    log.extend(agent("ava"))
    log.extend(agent("bob"))
    log.extend(conversation("first", customer_id="k", when=at(0), preferred_agent="bob"))
    log.step(at(1), POLICY)
    assert holder(log, "first") == "bob"
    log.append(ConversationResolved(at=at(10), customer_id="k", conversation_id="first"))


def test_returning_customer_goes_to_the_case_owner() -> None:
    log = Log()
    owned_by_bob(log)
    log.extend(conversation("again", customer_id="k", when=at(20)))
    log.step(at(21), POLICY)
    assert holder(log, "again") == "bob"
    assert log.state.conversations["again"].reason.rule == "case_owner"  # type: ignore[union-attr]


def test_case_owner_with_an_open_conversation_gets_the_new_one() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("bob"))
    log.extend(conversation("open", customer_id="k", when=at(0), preferred_agent="bob"))
    log.step(at(1), POLICY)
    log.extend(conversation("second", customer_id="k", channel="email", when=at(5)))
    log.step(at(6), POLICY)
    assert holder(log, "second") == "bob"


def test_case_owner_is_waited_for_while_busy_then_gets_it() -> None:
    log = Log()
    owned_by_bob(log)
    log.extend(agent("bob", capacity={"chat": 0, "email": 0, "sms": 0, "social": 0}, when=at(15))[:1])
    log.extend(conversation("again", customer_id="k", when=at(20)))
    assert log.step(at(21), POLICY) == []  # ava is free, but bob owns the case
    log.extend(agent("bob", when=at(25))[:1])  # bob has room again
    log.step(at(26), POLICY)
    assert holder(log, "again") == "bob"


def test_after_the_wait_a_held_conversation_routes_to_anyone() -> None:
    log = Log()
    owned_by_bob(log)
    log.append(AgentStatusChanged(at=at(15), agent_id="bob", status="away"))
    log.extend(conversation("again", customer_id="k", when=at(20)))
    assert log.step(at(49), POLICY) == []
    [dropped] = events_of(log.step(at(50), POLICY), EscalationStepReached)
    assert (dropped.step, dropped.relaxation) == (0, "drop_preferred")
    log.step(at(51), POLICY)
    assert holder(log, "again") == "ava"


def test_offline_case_owner_is_not_waited_for() -> None:
    log = Log()
    owned_by_bob(log)
    log.append(AgentStatusChanged(at=at(15), agent_id="bob", status="offline"))
    log.extend(conversation("again", customer_id="k", when=at(20)))
    log.step(at(21), POLICY)
    assert holder(log, "again") == "ava"


def test_case_owner_from_long_ago_is_not_waited_for() -> None:
    log = Log()
    owned_by_bob(log)
    log.extend(conversation("again", customer_id="k", when=at(10 + 4 * 86400)))
    log.extend(agent("bob", capacity={"chat": 0}, when=at(10 + 4 * 86400))[:1])
    log.step(at(10 + 4 * 86400 + 1), POLICY)
    assert holder(log, "again") == "ava"


def test_case_owner_without_the_needed_skill_is_not_waited_for() -> None:
    log = Log()
    owned_by_bob(log)
    log.extend(agent("tess", skills={"technical": 3}))
    log.extend(conversation("again", customer_id="k", skills={"technical": 2}, when=at(20)))
    log.step(at(21), POLICY)
    assert holder(log, "again") == "tess"


def test_an_agent_only_offered_the_conversation_does_not_become_its_case_owner() -> None:
    offers = RouterPolicy(offer_channels=("chat",), escalation_steps=(), case_owner_wait_seconds=30)
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("first", customer_id="k", when=at(0)))
    log.step(at(1), offers)
    assert log.state.conversations["first"].status == "offered"
    # An operator closes it before ava answers the offer (the API names no agent then).
    log.append(ConversationResolved(at=at(5), customer_id="k", conversation_id="first"))
    assert log.state.customers["k"].last_agent is None
