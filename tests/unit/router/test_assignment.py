"""Choosing an agent: skills, language, capacity, tiers, occupancy, idle time, reasons."""

from __future__ import annotations

from events.model import (
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    ConversationAssigned,
    ConversationResolved,
)
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder

AUTO = RouterPolicy(offer_channels=())


def test_agent_without_the_required_skill_is_not_chosen() -> None:
    log = Log()
    log.extend(agent("ava", skills={"billing": 3}))
    log.extend(agent("chen", skills={"technical": 5}, tier=1))
    log.extend(conversation("c1", skills={"technical": 2}))
    log.step(at(1), AUTO)
    assert holder(log, "c1") == "chen"


def test_skill_level_below_the_minimum_does_not_fit() -> None:
    log = Log()
    log.extend(agent("ava", skills={"billing": 1}))
    log.extend(conversation("c1", skills={"billing": 2}))
    assert log.step(at(1), AUTO) == []
    assert log.state.conversations["c1"].status == "waiting"


def test_agent_never_gets_more_than_channel_capacity() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 2}))
    for n in range(4):
        log.extend(conversation(f"c{n}"))
    log.step(at(1), AUTO)
    log.step(at(2), AUTO)
    assert log.state.agents["ava"].load == {"chat": 2}
    assert sum(c.status == "assigned" for c in log.state.conversations.values()) == 2


def test_overall_cap_limits_across_channels() -> None:
    log = Log()
    log.append(
        AgentProfileUpdated(
            at=at(0), agent_id="ava", profile=AgentProfile(skills={"billing": 3}, languages={"en": 5}, max_total=2)
        )
    )
    log.extend(agent("ava")[1:])
    log.extend(conversation("c1", channel="chat"))
    log.extend(conversation("c2", channel="email"))
    log.extend(conversation("c3", channel="sms"))
    log.step(at(1), AUTO)
    assert log.state.agents["ava"].total_load() == 2


def test_resolving_frees_capacity_for_the_next_waiting_conversation() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    log.extend(conversation("c1", when=at(0)))
    log.extend(conversation("c2", when=at(1)))
    log.step(at(2), AUTO)
    assert holder(log, "c1") == "ava"
    assert log.state.conversations["c2"].status == "waiting"
    log.append(ConversationResolved(at=at(3), customer_id="cu-c1", conversation_id="c1", agent_id="ava"))
    assert log.state.agents["ava"].load == {}
    log.step(at(4), AUTO)
    assert holder(log, "c2") == "ava"


def test_frontline_agent_is_preferred_over_a_free_specialist() -> None:
    log = Log()
    log.extend(agent("aaron-specialist", tier=2, skills={"billing": 5}))
    log.extend(agent("zoe-frontline", tier=1, skills={"billing": 2}))
    log.extend(conversation("c1"))
    log.step(at(1), AUTO)
    assert holder(log, "c1") == "zoe-frontline"


def test_specialist_takes_frontline_work_when_no_frontline_agent_is_on_shift() -> None:
    log = Log()
    log.extend(agent("chen", tier=2, skills={"billing": 2}))
    log.extend(agent("ava", tier=1, status="offline"))
    log.extend(conversation("c1"))
    log.step(at(1), AUTO)
    assert holder(log, "c1") == "chen"


def test_busy_frontline_keeps_the_specialist_free_until_the_tier_step() -> None:
    log = Log()
    log.extend(agent("ava", tier=1, capacity={"chat": 1}))
    log.extend(agent("chen", tier=2))
    log.extend(conversation("c1", when=at(0)))
    log.extend(conversation("c2", when=at(1)))
    log.step(at(2), AUTO)
    assert holder(log, "c1") == "ava"
    assert holder(log, "c2") is None  # waits for a frontline slot
    log.step(at(40), AUTO)  # the allow_tier_up step (30 s) is reached...
    assert log.state.conversations["c2"].step == 1
    log.step(at(41), AUTO)  # ...and the specialist may take it
    assert holder(log, "c2") == "chen"


def test_higher_skill_level_wins_within_a_tier_by_default() -> None:
    log = Log()
    log.extend(agent("ava", skills={"billing": 2}))
    log.extend(agent("bob", skills={"billing": 4}))
    log.extend(conversation("c1"))
    log.step(at(1), AUTO)
    assert holder(log, "c1") == "bob"


def test_closest_skill_fit_keeps_experts_free() -> None:
    log = Log()
    log.extend(agent("ava", skills={"billing": 2}))
    log.extend(agent("bob", skills={"billing": 4}))
    log.extend(conversation("c1", skills={"billing": 2}))
    log.step(at(1), RouterPolicy(offer_channels=(), skill_fit="closest"))
    assert holder(log, "c1") == "ava"


def test_lowest_occupancy_wins_among_equal_fits() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("bob"))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1), AUTO)
    first = holder(log, "c1")
    log.extend(conversation("c2", when=at(2)))
    log.step(at(3), AUTO)
    assert {first, holder(log, "c2")} == {"ava", "bob"}


def test_longest_idle_wins_among_equal_occupancy() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("bob"))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1), AUTO)  # ava (id tie-break) takes c1
    assert holder(log, "c1") == "ava"
    log.append(ConversationResolved(at=at(2), customer_id="cu-c1", conversation_id="c1"))
    log.extend(conversation("c2", when=at(3)))
    log.step(at(4), AUTO)  # both idle now; bob has waited longer since his last work (never)
    assert holder(log, "c2") == "bob"


def test_ties_break_by_agent_id() -> None:
    log = Log()
    log.extend(agent("zed"))
    log.extend(agent("amy"))
    log.extend(conversation("c1"))
    log.step(at(1), AUTO)
    assert holder(log, "c1") == "amy"


def test_email_is_assigned_directly_by_default_and_carries_a_reason() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", channel="email"))
    decisions = log.step(at(1))
    [assigned] = events_of(decisions, ConversationAssigned)
    assert assigned.channel == "email"
    assert assigned.reason.rule == "best_fit"
    assert {"priority", "tier", "skill", "occupancy", "idle_s", "waited_s"} <= set(assigned.reason.score)


def test_capacity_raised_applies_at_once() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    log.extend(conversation("c1", when=at(0)))
    log.extend(conversation("c2", when=at(1)))
    log.step(at(2), AUTO)
    assert holder(log, "c2") is None
    log.extend(agent("ava", capacity={"chat": 2})[:1])
    log.step(at(3), AUTO)
    assert holder(log, "c2") == "ava"


def test_capacity_lowered_stops_new_work_but_keeps_current() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 2}))
    log.extend(conversation("c1"))
    log.step(at(1), AUTO)
    log.extend(agent("ava", capacity={"chat": 1})[:1])
    log.extend(conversation("c2"))
    assert log.step(at(2), AUTO) == []
    assert holder(log, "c1") == "ava"


def test_idle_decide_makes_no_decisions() -> None:
    log = Log()
    log.extend(agent("ava", languages={"fr": 5}))
    log.extend(conversation("c1", language="de"))
    assert log.step(at(1), RouterPolicy(offer_channels=(), escalation_steps=())) == []
    assert log.step(at(2), RouterPolicy(offer_channels=(), escalation_steps=())) == []
    assert not log.state.pending.queues and not log.state.pending.agents


def test_waiting_conversation_is_assigned_to_agent_with_skill_language_and_capacity() -> None:
    log = Log()
    log.extend(agent("ava", languages={"en": 5}))
    log.extend(agent("bruno", languages={"es": 5}))
    log.extend(conversation("c1", language="es"))
    [decision] = log.step(at(1), AUTO)
    assert isinstance(decision.event, ConversationAssigned)
    assert decision.event.agent_id == "bruno"
    assert log.state.agents["bruno"].load == {"chat": 1}


def test_higher_language_level_is_preferred_after_the_skill_level() -> None:
    log = Log()
    log.extend(agent("ava", languages={"en": 3}))
    log.extend(agent("bo", languages={"en": 5, "es": 2}))
    log.extend(conversation("c1", channel="email"))
    log.step(at(1), AUTO)
    assert holder(log, "c1") == "bo"  # same tier and skill level: the more fluent speaker


def test_language_level_does_not_outrank_the_skill_level() -> None:
    log = Log()
    log.extend(agent("ava", skills={"billing": 5}, languages={"en": 2}))
    log.extend(agent("bo", skills={"billing": 3}, languages={"en": 5}))
    log.extend(conversation("c1", channel="email", skills={"billing": 1}))
    log.step(at(1), AUTO)
    assert holder(log, "c1") == "ava"


def test_language_level_is_ignored_when_the_conversation_names_no_language() -> None:
    log = Log()
    log.extend(agent("ava", languages={"en": 1}))
    log.extend(agent("bo", languages={"en": 5}))
    log.extend(conversation("c1", channel="email", language=None))
    log.step(at(1), AUTO)
    assert holder(log, "c1") == "ava"  # tie on everything else: agent id


def test_the_last_frontline_agent_leaving_the_shift_lets_the_free_specialist_take_the_work() -> None:
    """The tier ceiling rises when the last frontline agent who could do the work goes away:
    the waiting work is looked at again at once, not only when the specialist next changes."""
    log = Log()
    log.extend(agent("ava", tier=1, capacity={"chat": 1}))
    log.extend(agent("chen", tier=2))
    log.extend(conversation("c1", when=at(0)))
    log.extend(conversation("c2", when=at(1)))
    log.step(at(2), AUTO)
    assert holder(log, "c2") is None  # a frontline agent is on shift: the specialist is kept free
    assert log.step(at(3), AUTO) == []
    log.append(AgentStatusChanged(at=at(4), agent_id="ava", status="away"))
    log.step(at(5), AUTO)
    assert holder(log, "c2") == "chen"
