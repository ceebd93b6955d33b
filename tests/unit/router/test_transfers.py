"""Transfers (to an agent, a skill or a tier) and escalations; the third transfer goes up."""

from __future__ import annotations

from events.model import ConversationEscalated, ConversationTransferred
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, holder

POLICY = RouterPolicy(offer_channels=(), escalation_steps=())


def transfer(log: Log, when: float, **fields: object) -> None:
    log.append(ConversationTransferred(at=at(when), customer_id="cu-c1", conversation_id="c1", **fields))  # type: ignore[arg-type]


def test_transfer_to_an_agent_goes_to_that_agent_even_without_the_skill() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("sam", skills={"sales": 3}))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    assert holder(log, "c1") == "ava"
    transfer(log, 2, from_agent="ava", to_agent="sam", transfer_count=1)
    assert log.state.agents["ava"].load == {}
    log.step(at(3), POLICY)
    assert holder(log, "c1") == "sam"
    reason = log.state.conversations["c1"].reason
    assert reason is not None and reason.rule == "transfer_target"


def test_transfer_to_a_skill_changes_the_requirements_and_excludes_the_sender() -> None:
    log = Log()
    log.extend(agent("ava", skills={"billing": 3, "technical": 3}))
    log.extend(agent("tess", skills={"technical": 3}))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    transfer(log, 2, from_agent="ava", to_skill="technical", transfer_count=1)
    log.step(at(3), POLICY)
    assert holder(log, "c1") == "tess"
    assert log.state.conversations["c1"].requirements.skills == {"technical": 1}


def test_transfer_to_a_tier() -> None:
    log = Log()
    log.extend(agent("ava", tier=1))
    log.extend(agent("bea", tier=1))
    log.extend(agent("sue", tier=3))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    transfer(log, 2, from_agent="ava", to_tier=3, transfer_count=1)
    log.step(at(3), POLICY)
    assert holder(log, "c1") == "sue"


def test_third_transfer_goes_to_a_specialist() -> None:
    log = Log()
    for name in ("ava", "bea", "cat", "dan"):
        log.extend(agent(name, tier=1))
    log.extend(agent("zed", tier=2))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    for n in (1, 2):
        transfer(log, 1 + n, from_agent=holder(log, "c1"), transfer_count=n)
        log.step(at(1 + n), POLICY)
        assert log.state.agents[holder(log, "c1") or ""].profile.tier == 1
    transfer(log, 10, from_agent=holder(log, "c1"), transfer_count=3)
    log.step(at(11), POLICY)
    assert holder(log, "c1") == "zed"
    assert log.state.conversations["c1"].transfer_count == 3


def test_escalation_to_a_tier_routes_to_that_tier() -> None:
    log = Log()
    log.extend(agent("ava", tier=1))
    log.extend(agent("sue", tier=3))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    log.append(
        ConversationEscalated(
            at=at(2), customer_id="cu-c1", conversation_id="c1", from_agent="ava", to_tier=3, reason="angry"
        )
    )
    log.step(at(3), POLICY)
    assert holder(log, "c1") == "sue"
    assert log.state.agents["ava"].load == {}
