"""Escalation steps: each step reached is an event and relaxes the requirements."""

from __future__ import annotations

import pytest

from events.model import CustomerProfileUpdated, EscalationStepReached
from router.policy import EscalationStep, RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder


def steps(*pairs: tuple[float, str]) -> RouterPolicy:
    return RouterPolicy(
        offer_channels=(),
        escalation_steps=tuple(EscalationStep(after_seconds=s, relaxation=r) for s, r in pairs),
    )


def test_step_is_reached_after_its_wait_as_an_event() -> None:
    log = Log()
    log.extend(conversation("c1", skills={"billing": 2}, when=at(0)))
    policy = steps((30, "lower_skill_min"))
    assert log.step(at(29), policy) == []
    [reached] = events_of(log.step(at(30), policy), EscalationStepReached)
    assert (reached.step, reached.relaxation) == (1, "lower_skill_min")
    assert log.state.conversations["c1"].step == 1
    assert log.step(at(31), policy) == []  # no step left


def test_step_waits_are_counted_from_when_the_conversation_started_waiting() -> None:
    log = Log()
    log.extend(conversation("c1", skills={"billing": 2}, language="pt", when=at(0)))
    policy = steps((10, "lower_skill_min"), (20, "fallback_language"))
    log.step(at(25), policy)
    log.step(at(25), policy)
    assert log.state.conversations["c1"].step == 2


def test_lower_skill_min_lets_a_less_skilled_agent_take_it() -> None:
    log = Log()
    log.extend(agent("ava", skills={"billing": 2}))
    log.extend(conversation("c1", skills={"billing": 3}, when=at(0)))
    policy = steps((30, "lower_skill_min"))
    assert log.step(at(5), policy) == []
    log.step(at(30), policy)
    log.step(at(31), policy)
    assert holder(log, "c1") == "ava"
    assert log.state.conversations["c1"].reason is not None
    assert log.state.conversations["c1"].reason.step == 1  # type: ignore[union-attr]


def test_fallback_language_accepts_the_conversation_fallbacks() -> None:
    log = Log()
    log.extend(agent("ava", languages={"en": 5}))
    log.extend(conversation("c1", language="pt", when=at(0), fallback_languages=("es", "en")))
    policy = steps((60, "fallback_language"))
    assert log.step(at(59), policy) == []
    log.step(at(60), policy)
    log.step(at(61), policy)
    assert holder(log, "c1") == "ava"


def test_fallback_language_uses_policy_languages_when_the_conversation_names_none() -> None:
    log = Log()
    log.extend(agent("ava", languages={"en": 5}))
    log.extend(conversation("c1", language="pt", when=at(0)))
    log.step(at(60), steps((60, "fallback_language")))
    log.step(at(61), steps((60, "fallback_language")))
    assert holder(log, "c1") == "ava"


def test_any_agent_with_skill_ignores_level_and_language() -> None:
    log = Log()
    log.extend(agent("ava", skills={"billing": 1}, languages={"fr": 5}))
    log.extend(conversation("c1", skills={"billing": 4}, language="de", when=at(0)))
    policy = steps((300, "any_agent_with_skill"))
    assert log.step(at(100), policy) == []
    log.step(at(300), policy)
    log.step(at(301), policy)
    assert holder(log, "c1") == "ava"


def test_any_agent_with_skill_still_requires_the_skill() -> None:
    log = Log()
    log.extend(agent("ava", skills={"technical": 5}))
    log.extend(conversation("c1", skills={"billing": 1}, when=at(0)))
    policy = steps((1, "any_agent_with_skill"))
    log.step(at(2), policy)
    assert log.step(at(3), policy) == []


def test_allow_tier_up_lets_a_specialist_take_frontline_work_while_frontline_is_busy() -> None:
    log = Log()
    log.extend(agent("ava", tier=1, capacity={"chat": 0, "sms": 0, "social": 0, "email": 1}))
    log.extend(agent("chen", tier=2))
    log.extend(conversation("c0", channel="email", when=at(0)))
    log.extend(conversation("c1", channel="email", when=at(0)))
    policy = steps((30, "allow_tier_up"))
    log.step(at(1), policy)
    assert holder(log, "c0") == "ava" and holder(log, "c1") is None
    log.step(at(30), policy)
    log.step(at(31), policy)
    assert holder(log, "c1") == "chen"


def test_a_conversation_gets_one_decision_per_round_even_when_a_step_is_due() -> None:
    log = Log()
    log.extend(conversation("c1", when=at(0)))
    log.extend(agent("ava", when=at(50)))
    decisions = log.decide(at(100), steps((30, "lower_skill_min")))
    assert len(decisions) == 1  # the assignment; the step is moot


def test_lower_tier_min_lets_a_frontline_agent_serve_a_platinum_customer_after_the_wait() -> None:
    # Platinum asks for a tier-2 agent; none is on shift. Without the step the customer waits
    # for ever (the simulator's finding); with it, the frontline agent takes it after 900 s.
    log = Log()
    log.extend(agent("ava", tier=1))
    log.extend(conversation("c1", customer_id="p", when=at(0)))
    log.append(CustomerProfileUpdated(at=at(0), customer_id="p", tier="platinum"))
    policy = steps((900, "lower_tier_min"))
    log.step(at(899), policy)
    assert holder(log, "c1") is None
    log.step(at(900), policy)
    log.step(at(901), policy)
    assert holder(log, "c1") == "ava"


def test_lower_tier_min_never_lowers_a_tier_the_requirements_name() -> None:
    log = Log()
    log.extend(agent("ava", tier=1))
    log.extend(conversation("c1", when=at(0), min_tier=2))
    policy = steps((10, "lower_tier_min"), (20, "lower_tier_min"))
    log.step(at(30), policy)
    log.step(at(31), policy)
    assert holder(log, "c1") is None


def test_an_unknown_relaxation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown escalation relaxation 'alow_tier_up'"):
        steps((30, "alow_tier_up"))


def reached(log: Log, now: float, policy: RouterPolicy) -> list[tuple[int, str]]:
    return [(e.step, e.relaxation) for e in events_of(log.step(at(now), policy), EscalationStepReached)]


def test_a_step_that_changes_nothing_for_the_conversation_is_not_recorded() -> None:
    # English with English as the fallback, every skill level already 1: only three of the
    # default five steps change who may take it, so a backlog records three, not five.
    log = Log()
    log.extend(conversation("c1", skills={"billing": 1}, language="en", when=at(0)))
    policy = RouterPolicy(offer_channels=())
    assert reached(log, 30, policy) == [(1, "allow_tier_up")]
    assert reached(log, 60, policy) == []
    assert reached(log, 120, policy) == []
    # The next step that matters carries its own number: the skipped ones count as reached.
    assert reached(log, 300, policy) == [(4, "any_agent_with_skill")]
    assert reached(log, 600, policy) == [(5, "forgive_declines")]
    assert log.state.conversations["c1"].step == 5


def test_the_same_steps_are_recorded_where_they_widen_the_search() -> None:
    log = Log()
    log.extend(conversation("c1", skills={"billing": 3}, language="pt", when=at(0)))
    policy = RouterPolicy(offer_channels=())
    recorded = [step for now in (30, 60, 120, 300, 600) for step in reached(log, now, policy)]
    assert recorded == [
        (1, "allow_tier_up"),
        (2, "fallback_language"),
        (3, "lower_skill_min"),
        (4, "any_agent_with_skill"),
        (5, "forgive_declines"),
    ]


def test_a_skipped_step_still_lets_the_agents_it_would_have_let_in() -> None:
    # A Portuguese conversation whose fallback is Portuguese: the fallback step adds nobody,
    # the lower skill step does, and once it is reached the agent it lets in takes it.
    log = Log()
    log.extend(agent("ava", skills={"billing": 1}, languages={"pt": 5}))
    log.extend(conversation("c1", skills={"billing": 2}, language="pt", fallback_languages=("pt",), when=at(0)))
    policy = steps((10, "fallback_language"), (20, "lower_skill_min"))
    assert reached(log, 10, policy) == []
    assert reached(log, 20, policy) == [(2, "lower_skill_min")]
    log.step(at(21), policy)
    assert holder(log, "c1") == "ava"


def test_a_change_to_the_customer_makes_a_skipped_step_count_again() -> None:
    # lower_tier_min changes nothing for a standard customer; once she is platinum (tier 2
    # and up) it does, and a wait already past the step reaches it at the next round.
    log = Log()
    log.extend(conversation("c1", customer_id="p", when=at(0)))
    policy = steps((10, "lower_tier_min"), (1000, "any_agent_with_skill"))
    assert reached(log, 10, policy) == []
    log.append(CustomerProfileUpdated(at=at(11), customer_id="p", tier="platinum"))
    assert reached(log, 12, policy) == [(1, "lower_tier_min")]
    log.extend(agent("ava", tier=1, when=at(13)))
    log.step(at(14), policy)
    assert holder(log, "c1") == "ava"


def test_a_new_policy_files_the_waiting_conversations_steps_again() -> None:
    # Under the first policy the fallback step changes nothing (English is the fallback); a
    # router restarted with Portuguese as the fallback reaches it for the waiting conversation.
    log = Log()
    log.extend(agent("ava", languages={"pt": 5}))
    log.extend(conversation("c1", language="en", when=at(0)))
    english = RouterPolicy(
        offer_channels=(), escalation_steps=(EscalationStep(after_seconds=10, relaxation="fallback_language"),)
    )
    assert reached(log, 10, english) == []
    portuguese = RouterPolicy(
        offer_channels=(),
        fallback_languages=("pt",),
        escalation_steps=(EscalationStep(after_seconds=10, relaxation="fallback_language"),),
    )
    assert reached(log, 11, portuguese) == [(1, "fallback_language")]
    log.step(at(12), portuguese)
    assert holder(log, "c1") == "ava"
