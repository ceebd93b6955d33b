"""Offer mode: offers with expiry, accept, decline, expiry, agents set away."""

from __future__ import annotations

from datetime import timedelta

from events.model import (
    AgentOffered,
    AgentStatusChanged,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
)
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder

POLICY = RouterPolicy(offer_timeout_seconds=20, escalation_steps=())


def offered(log: Log, conversation_id: str) -> tuple[str | None, str]:
    conv = log.state.conversations[conversation_id]
    return conv.agent_id, conv.status


def test_chat_is_offered_with_an_expiry() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    [offer] = events_of(log.step(at(1), POLICY), AgentOffered)
    assert offer.agent_id == "ava"
    assert offer.expires_at == at(1) + timedelta(seconds=20)
    assert offer.reason.rule == "best_fit"
    assert offered(log, "c1") == ("ava", "offered")


def test_pending_offer_holds_capacity() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    log.extend(conversation("c1"))
    log.extend(conversation("c2"))
    log.step(at(1), POLICY)
    assert log.state.agents["ava"].load == {"chat": 1}
    assert log.state.conversations["c2"].status == "waiting"
    assert log.step(at(2), POLICY) == []


def test_accepted_offer_becomes_an_assignment() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    log.append(OfferAccepted(at=at(2), customer_id="cu-c1", conversation_id="c1", agent_id="ava"))
    assert offered(log, "c1") == ("ava", "assigned")
    assert log.state.agents["ava"].load == {"chat": 1}
    assert log.step(at(60), POLICY) == []  # no expiry once accepted


def test_declined_offer_goes_to_another_agent_never_back_to_the_decliner() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("bob"))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    first = holder(log, "c1")
    assert first == "ava"
    log.append(OfferDeclined(at=at(2), customer_id="cu-c1", conversation_id="c1", agent_id="ava"))
    assert log.state.agents["ava"].load == {}
    [offer] = events_of(log.step(at(3), POLICY), AgentOffered)
    assert offer.agent_id == "bob"
    log.append(OfferDeclined(at=at(4), customer_id="cu-c1", conversation_id="c1", agent_id="bob"))
    assert log.step(at(5), POLICY) == []  # both declined: it waits
    assert log.state.conversations["c1"].status == "waiting"


def test_offer_expires_after_the_timeout_and_routes_again() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("bob"))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    assert log.step(at(20), POLICY) == []  # not yet
    [expired] = events_of(log.step(at(21), POLICY), OfferExpired)
    assert expired.agent_id == "ava"
    assert log.state.conversations["c1"].status == "waiting"
    [offer] = events_of(log.step(at(22), POLICY), AgentOffered)
    assert offer.agent_id == "bob"


def test_agent_who_lets_offers_expire_in_a_row_is_set_away() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    policy = RouterPolicy(offer_timeout_seconds=10, expiries_before_away=2, escalation_steps=())
    now = 0.0
    for n in range(2):
        log.extend(conversation(f"c{n}", when=at(now)))
        log.step(at(now + 1), policy)
        assert holder(log, f"c{n}") == "ava"
        now += 12
        events_of(log.step(at(now), policy), OfferExpired)
    decisions = log.step(at(now + 1), policy)
    [away] = events_of(decisions, AgentStatusChanged)
    assert away.agent_id == "ava" and away.status == "away"
    assert next(d for d in decisions if d.event is away).expected is None
    assert log.state.agents["ava"].status == "away"
    assert events_of(log.step(at(now + 2), policy), AgentOffered) == []


def _one_expiry_each(names: list[str], policy: RouterPolicy) -> tuple[Log, float]:
    """Each agent lets one offer expire (one chat slot each, one conversation each)."""
    log = Log()
    for name in names:
        log.extend(agent(name, capacity={"chat": 1}))
    for n in range(len(names)):
        log.extend(conversation(f"c{n}"))
    log.step(at(1), policy)
    assert {holder(log, f"c{n}") for n in range(len(names))} == set(names)
    assert len(events_of(log.step(at(12), policy), OfferExpired)) == len(names)
    return log, 12.0


def test_a_streak_below_the_limit_is_judged_once_not_every_round() -> None:
    # Agents who once let an offer expire pile up over a day; each round judges only the
    # streaks that grew since the last one (it sorted and scanned all of them every round).
    policy = RouterPolicy(offer_timeout_seconds=10, expiries_before_away=2, escalation_steps=())
    log, now = _one_expiry_each(["ava", "bo", "cy"], policy)
    assert log.state.streaking_agents == {"ava", "bo", "cy"}
    assert events_of(log.step(at(now + 1), policy), AgentStatusChanged) == []
    assert log.state.pending.streaks == set()
    assert events_of(log.step(at(now + 2), policy), AgentStatusChanged) == []


def test_a_lower_limit_judges_every_streak_again() -> None:
    policy = RouterPolicy(offer_timeout_seconds=10, expiries_before_away=2, escalation_steps=())
    log, now = _one_expiry_each(["ava", "bo"], policy)
    assert events_of(log.step(at(now + 1), policy), AgentStatusChanged) == []
    stricter = RouterPolicy(offer_timeout_seconds=10, expiries_before_away=1, escalation_steps=())
    away = events_of(log.step(at(now + 2), stricter), AgentStatusChanged)
    assert sorted((e.agent_id, e.status) for e in away) == [("ava", "away"), ("bo", "away")]


def test_an_accepted_offer_resets_the_expiry_streak() -> None:
    log = Log()
    log.extend(agent("ava", capacity={"chat": 1}))
    policy = RouterPolicy(offer_timeout_seconds=10, expiries_before_away=2, escalation_steps=())
    log.extend(conversation("c0"))
    log.step(at(1), policy)
    log.step(at(12), policy)  # expired
    log.step(at(13), policy)  # offered c0 again? ava is excluded now: it waits
    log.extend(conversation("c1", when=at(14)))
    log.step(at(15), policy)
    log.append(OfferAccepted(at=at(16), customer_id="cu-c1", conversation_id="c1", agent_id="ava"))
    assert log.state.agents["ava"].expired_in_a_row == 0
    assert "ava" not in log.state.streaking_agents


def test_no_offer_is_made_to_an_away_agent() -> None:
    log = Log()
    log.extend(agent("ava", status="away"))
    log.extend(conversation("c1"))
    assert log.step(at(1), POLICY) == []


def test_offer_channels_are_configurable() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", channel="email"))
    log.extend(conversation("c2", channel="chat"))
    decisions = log.step(at(1), RouterPolicy(offer_channels=("email",), escalation_steps=()))
    kinds = {type(d.event).__name__: d.event.conversation_id for d in decisions}  # type: ignore[union-attr]
    assert kinds == {"AgentOffered": "c1", "ConversationAssigned": "c2"}
