"""forgive_declines: agents excluded for declining or letting an offer expire may be offered
the conversation again; agents excluded by name (requirements, transfer away) stay excluded."""

from __future__ import annotations

from events.model import (
    AgentOffered,
    ConversationReleased,
    ConversationTransferred,
    EscalationStepReached,
    OfferAccepted,
    OfferDeclined,
)
from router import snapshot
from router.policy import DEFAULT_STEPS, FORGIVE_DECLINES, EscalationStep, RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder, same_routing_state

POLICY = RouterPolicy(
    offer_timeout_seconds=10,
    expiries_before_away=0,
    escalation_steps=(EscalationStep(after_seconds=60, relaxation=FORGIVE_DECLINES),),
)


def decline(log: Log, when: float, agent_id: str, conversation_id: str = "c1") -> None:
    log.append(
        OfferDeclined(
            at=at(when), customer_id=f"cu-{conversation_id}", conversation_id=conversation_id, agent_id=agent_id
        )
    )


def test_the_only_qualified_agent_who_declined_gets_it_again_once_forgiven() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1), POLICY)
    decline(log, 2, "ava")
    assert log.step(at(3), POLICY) == []  # ava is excluded: it waits
    assert log.state.conversations["c1"].excluded == ["ava"]
    [reached] = events_of(log.step(at(60), POLICY), EscalationStepReached)
    assert (reached.step, reached.relaxation) == (1, FORGIVE_DECLINES)
    assert log.state.conversations["c1"].excluded == []
    [offer] = events_of(log.step(at(61), POLICY), AgentOffered)
    assert offer.agent_id == "ava"
    assert offer.reason.step == 1


def test_an_expired_offer_is_forgiven_too() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1), POLICY)
    log.step(at(12), POLICY)  # the offer expires
    assert log.state.conversations["c1"].excluded == ["ava"]
    log.step(at(60), POLICY)
    log.step(at(61), POLICY)
    assert holder(log, "c1") == "ava"


def test_a_decline_after_forgiveness_counts_again() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1), POLICY)
    decline(log, 2, "ava")
    log.step(at(60), POLICY)
    log.step(at(61), POLICY)
    decline(log, 62, "ava")  # declined again: no second forgiveness in this wait
    for second in range(63, 400, 30):
        assert events_of(log.step(at(second), POLICY), AgentOffered) == []
    assert log.state.conversations["c1"].status == "waiting"


def test_exclusions_named_in_the_requirements_are_not_forgiven() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", when=at(0), excluded_agents=["ava"]))
    for second in (1, 60, 61, 200):
        assert events_of(log.step(at(second), POLICY), AgentOffered) == []
    assert log.state.conversations["c1"].excluded == ["ava"]


def test_the_agent_transferred_away_from_is_not_forgiven_even_after_declining_before() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(agent("bo"))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1), POLICY)
    first = holder(log, "c1")
    other = "bo" if first == "ava" else "ava"
    decline(log, 2, first)  # type: ignore[arg-type]
    log.step(at(3), POLICY)
    assert holder(log, "c1") == other
    log.append(OfferAccepted(at=at(4), customer_id="cu-c1", conversation_id="c1", agent_id=other))
    log.append(
        ConversationTransferred(at=at(5), customer_id="cu-c1", conversation_id="c1", from_agent=other, transfer_count=1)
    )
    conv = log.state.conversations["c1"]
    assert sorted(conv.excluded) == sorted([first, other]) and conv.declined == [first]
    log.step(at(6), POLICY)
    assert log.state.conversations["c1"].status == "waiting"
    log.step(at(65), POLICY)  # forgive_declines: the decline is lifted, the transfer away is not
    assert log.state.conversations["c1"].excluded == [other]
    log.step(at(66), POLICY)
    assert holder(log, "c1") == first


def test_declined_survives_replay_and_snapshot() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1), POLICY)
    decline(log, 2, "ava")
    assert same_routing_state(log.replay(), log.state)
    assert snapshot.load(snapshot.dump(log.state)).conversations["c1"].declined == ["ava"]


def test_forgive_declines_is_a_late_default_step() -> None:
    assert DEFAULT_STEPS[-1].relaxation == FORGIVE_DECLINES
    assert DEFAULT_STEPS[-1].after_seconds > max(step.after_seconds for step in DEFAULT_STEPS[:-1])
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", when=at(0)))
    policy = RouterPolicy(offer_timeout_seconds=10, expiries_before_away=0)
    log.step(at(1), policy)
    decline(log, 2, "ava")
    second = 3
    while log.state.conversations["c1"].status == "waiting" and second < 3600:
        log.step(at(second), policy)
        second += 10
    assert holder(log, "c1") == "ava"
    assert second > DEFAULT_STEPS[-1].after_seconds


def test_a_call_she_did_not_answer_leaves_her_out_until_forgiven_and_is_no_transfer() -> None:
    """connectors.voice: her phone did not answer, intake hands the call back as a declined
    release. It was a transfer away from her: never forgiven, and counted towards
    ``specialist_after_transfers``."""
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1), POLICY)
    assert holder(log, "c1") == "ava"
    log.append(
        ConversationReleased(
            at=at(2),
            customer_id="cu-c1",
            conversation_id="c1",
            agent_id="ava",
            reason="call_not_answered",
            declined=True,
        )
    )
    conv = log.state.conversations["c1"]
    assert (conv.status, conv.excluded, conv.declined, conv.transfer_count) == ("waiting", ["ava"], ["ava"], 0)
    assert log.step(at(3), POLICY) == []  # she is left out: it waits
    log.step(at(62), POLICY)  # forgive_declines, a minute after it went back to waiting
    log.step(at(63), POLICY)
    assert holder(log, "c1") == "ava"


def test_going_offline_is_a_release_she_is_not_left_out_of() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", when=at(0)))
    log.step(at(1), POLICY)
    log.append(
        ConversationReleased(
            at=at(2), customer_id="cu-c1", conversation_id="c1", agent_id="ava", reason="agent_offline"
        )
    )
    assert log.state.conversations["c1"].excluded == []
