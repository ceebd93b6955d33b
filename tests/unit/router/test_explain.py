"""Why work waits (``router.explain``): eligible agents and the first blocking requirement,
one test per reason, in the order they are checked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from events.model import (
    AgentDeactivated,
    AgentStatusChanged,
    ConversationEscalated,
    ConversationResolved,
    ConversationTransferred,
    CustomerProfileUpdated,
    LogEvent,
    OfferAccepted,
    OfferDeclined,
)
from router.explain import EligibleAgents, WaitingBecause, explained_queues, nobody_could_take, waiting_because
from router.policy import FALLBACK_LANGUAGE, EscalationStep, RouterPolicy
from router.queues import queue_summaries
from tests.unit.router.helpers import Log, agent, at, conversation, holder

POLICY = RouterPolicy(offer_channels=("chat",), wrap_up_seconds={"chat": 30.0})


def why(events: list[LogEvent], conversation_id: str = "c1", now: datetime | None = None) -> WaitingBecause | None:
    log = Log()
    log.extend(events)
    return why_in(log, conversation_id, now)


def why_in(log: Log, conversation_id: str = "c1", now: datetime | None = None) -> WaitingBecause | None:
    conv = log.state.conversations[conversation_id]
    return waiting_because(log.state, conv, now or at(5), POLICY)


def counts(total: int, online: int, free: int) -> EligibleAgents:
    return EligibleAgents(total=total, online=online, with_free_capacity=free)


def test_a_skill_nobody_has_at_the_level() -> None:
    found = why([*agent("ava", skills={"billing": 1}), *conversation("c1", skills={"billing": 2})])
    assert found == WaitingBecause(eligible=counts(0, 0, 0), blocking="no agent has skill billing>=2")


def test_skills_nobody_has_together() -> None:
    events = [
        *agent("ava", skills={"billing": 3}),
        *agent("bruno", skills={"technical": 3}),
        *conversation("c1", skills={"billing": 1, "technical": 1}),
    ]
    assert why(events) == WaitingBecause(
        eligible=counts(0, 0, 0), blocking="no agent has skills billing>=1 and technical>=1"
    )


def test_a_language_nobody_speaks() -> None:
    found = why([*agent("ava", languages={"en": 5}), *conversation("c1", language="de")])
    assert found is not None and found.blocking == "no agent speaks de"


def test_a_language_only_agents_without_the_skills_speak() -> None:
    events = [
        *agent("ava", skills={"billing": 3}, languages={"en": 5}),
        *agent("hans", skills={"technical": 3}, languages={"de": 5}),
        *conversation("c1", skills={"billing": 1}, language="de"),
    ]
    assert why(events).blocking == "no agent with billing>=1 speaks de"  # type: ignore[union-attr]


def test_the_minimum_tier() -> None:
    events = [*agent("hans", languages={"de": 5}, tier=1), *conversation("c1", language="de", min_tier=2)]
    assert why(events).blocking == "no agent of tier >= 2 speaks de"  # type: ignore[union-attr]


def test_the_channel() -> None:
    events = [*agent("ava", capacity={"chat": 2}), *conversation("c1", channel="sms")]
    assert why(events).blocking == "no agent who qualifies takes sms (capacity 0 there)"  # type: ignore[union-attr]


def test_every_qualified_agent_excluded() -> None:
    events = [*agent("ava"), *conversation("c1", excluded_agents=("ava",))]
    found = why(events)
    assert found is not None and found.eligible == counts(0, 0, 0)
    assert (
        found.blocking == "every qualified agent is excluded (declined, let the offer expire or transferred away): ava"
    )


def test_a_deactivated_agent_is_not_counted() -> None:
    events = [*agent("hans", languages={"de": 5}), AgentDeactivated(at=at(0), agent_id="hans")]
    found = why([*events, *conversation("c1", language="de")])
    assert found == WaitingBecause(eligible=counts(0, 0, 0), blocking="no agent is active")
    found = why([*events, *agent("ava"), *conversation("c1", language="de")])
    assert found == WaitingBecause(eligible=counts(0, 0, 0), blocking="no agent speaks de")


def test_no_eligible_agent_online() -> None:
    events = [*agent("ava", status="away"), *agent("bruno", status="offline"), *conversation("c1")]
    assert why(events) == WaitingBecause(
        eligible=counts(2, 0, 0), blocking="no eligible agent is online (1 away, 1 offline)"
    )


def test_every_online_eligible_agent_at_capacity() -> None:
    log = Log()
    log.extend([*agent("ava", capacity={"sms": 1}), *conversation("c0", channel="sms")])
    log.step(at(1), POLICY)
    assert holder(log, "c0") == "ava"
    log.extend(conversation("c1", channel="sms", when=at(2)))
    assert why_in(log) == WaitingBecause(
        eligible=counts(1, 1, 0), blocking="every online eligible agent is at capacity on sms"
    )


def test_in_wrap_up() -> None:
    log = Log()
    log.extend([*agent("ava", capacity={"chat": 1}), *conversation("c0", customer_id="k0")])
    log.step(at(0), POLICY)
    log.append(OfferAccepted(at=at(1), customer_id="k0", conversation_id="c0", agent_id="ava"))
    log.append(ConversationResolved(at=at(10), customer_id="k0", conversation_id="c0", agent_id="ava"))
    log.extend(conversation("c1", when=at(12)))
    assert why_in(log, now=at(20)) == WaitingBecause(
        eligible=counts(1, 1, 0), blocking="in wrap-up until 2026-01-05T09:00:40Z (ava)"
    )
    assert why_in(log, now=at(40)) == WaitingBecause(eligible=counts(1, 1, 1), blocking=None)


def test_offered() -> None:
    log = Log()
    log.extend([*agent("ava", capacity={"chat": 1}), *conversation("c1")])
    log.step(at(0), POLICY)
    assert why_in(log) == WaitingBecause(
        eligible=counts(1, 1, 0), blocking="offered to ava, expires 2026-01-05T09:00:30Z"
    )


def test_held_for_the_case_owner() -> None:
    events = [*agent("ava", status="away"), *agent("bruno"), *conversation("c1", preferred_agent="ava")]
    assert why(events) == WaitingBecause(
        eligible=counts(2, 1, 1), blocking="held for the case owner ava until 2026-01-05T09:00:30Z"
    )


def test_kept_for_a_lower_tier_on_shift() -> None:
    log = Log()
    log.extend([*agent("ava", tier=1, capacity={"email": 1}), *conversation("c0", channel="email")])
    log.step(at(0), POLICY)
    assert holder(log, "c0") == "ava"
    log.extend([*agent("chen", tier=2, capacity={"email": 1}), *conversation("c1", channel="email", when=at(1))])
    found = why_in(log, now=at(2))
    assert found is not None and found.eligible == counts(2, 2, 1)
    assert found.blocking is not None and found.blocking.startswith("every free eligible agent is above tier 1")


def test_nothing_blocks_when_a_free_eligible_agent_can_take_it() -> None:
    assert why([*agent("ava"), *conversation("c1")]) == WaitingBecause(eligible=counts(1, 1, 1), blocking=None)


def test_a_conversation_being_worked_is_not_explained() -> None:
    log = Log()
    log.extend([*agent("ava"), *conversation("c1", channel="email")])
    log.step(at(0), POLICY)
    assert log.state.conversations["c1"].status == "assigned"
    assert why_in(log) is None


def test_each_queue_says_why_its_work_waits() -> None:
    log = Log()
    log.extend(
        [
            *agent("ava", languages={"en": 5}),
            *agent("hans", languages={"de": 5}, status="away"),
            *conversation("de1", language="de", customer_id="k1"),
            *conversation("de2", language="de", customer_id="k2"),
            *conversation("fr1", language="fr", customer_id="k3"),
            AgentStatusChanged(at=at(0), agent_id="ava", status="away"),
        ]
    )
    queues = explained_queues(log.state, queue_summaries(log.state, at(5).timestamp(), POLICY), at(5), POLICY)
    by_language = {q.language: (q.waiting, q.eligible, q.blocking) for q in queues}
    assert by_language == {
        "de": (2, counts(1, 0, 0), "no eligible agent is online (1 away, 0 offline)"),
        "fr": (1, counts(0, 0, 0), "no agent speaks fr"),
    }


# --- a transfer or an escalation nobody could take (the API refuses it, 409) ----------------


def transfer(to_skill: str | None = None, to_tier: int | None = None, from_agent: str | None = None) -> Any:
    return ConversationTransferred(
        at=at(1), customer_id="cu-c1", conversation_id="c1", from_agent=from_agent, to_skill=to_skill, to_tier=to_tier
    )


WITHOUT_WIDENING = RouterPolicy(
    escalation_steps=(EscalationStep(after_seconds=60, relaxation=FALLBACK_LANGUAGE),), fallback_languages=()
)


def test_a_transfer_to_a_skill_whose_agents_speak_none_of_the_languages_nobody_could_take() -> None:
    log = Log()
    log.extend([*agent("ava", skills={"billing": 3}, languages={"de": 5}), *agent("bruno", skills={"technical": 3})])
    log.extend(conversation("c1", language="de"))
    conv = log.state.conversations["c1"]
    blocking = nobody_could_take(log.state, conv, transfer(to_skill="technical"), WITHOUT_WIDENING)
    assert blocking == "no agent with technical>=1 speaks de"
    # The shipped policy's any_agent_with_skill step (after 5 min) drops the language: bruno, then.
    assert nobody_could_take(log.state, conv, transfer(to_skill="technical"), RouterPolicy()) is None
    assert log.state.conversations["c1"].requirements.skills == {"billing": 1}  # the view itself untouched


def test_a_transfer_below_the_customer_tiers_minimum_nobody_could_take() -> None:
    log = Log()
    log.extend([*agent("ava", skills={"billing": 3}, tier=2), *agent("bruno", skills={"technical": 3}, tier=1)])
    log.extend(conversation("c1", customer_id="vip"))
    log.extend([CustomerProfileUpdated(at=at(0), customer_id="vip", tier="platinum")])  # agents of tier 2 and up
    conv = log.state.conversations["c1"]
    blocking = nobody_could_take(log.state, conv, transfer(to_skill="technical"), RouterPolicy())
    assert blocking == "no agent of tier >= 2 has technical>=1"
    escalated = ConversationEscalated(at=at(1), customer_id="vip", conversation_id="c1", to_tier=3)
    assert nobody_could_take(log.state, conv, escalated, RouterPolicy()) == "no agent of tier >= 3 has billing>=1"
    assert nobody_could_take(log.state, conv, transfer(to_skill="billing"), RouterPolicy()) is None


def test_agents_who_declined_count_where_a_step_forgives_them_and_the_one_transferring_away_never() -> None:
    log = Log()
    log.extend([*agent("ava"), *agent("bruno")])
    log.extend(conversation("c1"))
    log.step(at(1))
    first = holder(log, "c1")
    assert first is not None
    log.extend([OfferDeclined(at=at(2), customer_id="cu-c1", conversation_id="c1", agent_id=first)])
    log.step(at(3))
    second = holder(log, "c1")
    assert second is not None and second != first
    log.extend([OfferAccepted(at=at(4), customer_id="cu-c1", conversation_id="c1", agent_id=second)])
    conv = log.state.conversations["c1"]
    assert conv.excluded == [first]
    away = transfer(to_skill="billing", from_agent=second)
    assert nobody_could_take(log.state, conv, away, RouterPolicy()) is None  # forgive_declines: the first again
    blocking = nobody_could_take(log.state, conv, away, WITHOUT_WIDENING)
    assert blocking is not None and blocking.startswith("every qualified agent is excluded"), blocking
    assert blocking.endswith(", ".join(sorted([first, second])))
