"""Agent status: offline hands back chat/sms/social (keeps email), away stops new work."""

from __future__ import annotations

from events.model import (
    AgentOffered,
    AgentStatusChanged,
    ConversationReleased,
    OfferAccepted,
)
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, at, conversation, events_of, holder

POLICY = RouterPolicy(offer_channels=(), escalation_steps=())


def test_going_offline_hands_back_chat_sms_social_and_keeps_email() -> None:
    log = Log()
    log.extend(agent("ava"))
    for channel in ("chat", "sms", "social", "email"):
        log.extend(conversation(channel, channel=channel))  # type: ignore[arg-type]
    log.step(at(1), POLICY)
    assert log.state.agents["ava"].total_load() == 4
    log.append(AgentStatusChanged(at=at(2), agent_id="ava", status="offline"))
    released = events_of(log.step(at(3), POLICY), ConversationReleased)
    assert sorted(e.conversation_id for e in released) == ["chat", "sms", "social"]
    assert all(e.agent_id == "ava" and e.reason == "agent_offline" for e in released)
    assert holder(log, "email") == "ava"
    assert log.state.agents["ava"].load == {"email": 1}
    assert {log.state.conversations[c].status for c in ("chat", "sms", "social")} == {"waiting"}
    assert log.step(at(4), POLICY) == []  # nothing more to hand back, nobody to route to


def test_released_conversations_route_to_another_agent() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    log.extend(agent("bob", when=at(2)))
    log.append(AgentStatusChanged(at=at(3), agent_id="ava", status="offline"))
    log.step(at(4), POLICY)  # released
    log.step(at(5), POLICY)  # routed again
    assert holder(log, "c1") == "bob"


def test_pending_offers_of_an_agent_going_offline_are_handed_back_on_every_channel() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1", channel="email"))
    log.step(at(1), RouterPolicy(offer_channels=("email",), escalation_steps=()))
    log.append(AgentStatusChanged(at=at(2), agent_id="ava", status="offline"))
    [released] = events_of(log.step(at(3), POLICY), ConversationReleased)
    assert released.conversation_id == "c1"


def test_coming_back_before_the_release_keeps_the_conversations() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    log.append(AgentStatusChanged(at=at(2), agent_id="ava", status="offline"))
    log.append(AgentStatusChanged(at=at(2), agent_id="ava", status="available"))
    assert events_of(log.step(at(3), POLICY), ConversationReleased) == []
    assert holder(log, "c1") == "ava"


def test_away_agent_keeps_work_but_gets_no_new_work() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    log.step(at(1), POLICY)
    log.append(AgentStatusChanged(at=at(2), agent_id="ava", status="away"))
    log.extend(conversation("c2", when=at(3)))
    assert log.step(at(4), POLICY) == []
    assert holder(log, "c1") == "ava"
    log.append(AgentStatusChanged(at=at(5), agent_id="ava", status="available"))
    log.step(at(6), POLICY)
    assert holder(log, "c2") == "ava"


def test_away_agent_may_still_accept_a_pending_offer() -> None:
    log = Log()
    log.extend(agent("ava"))
    log.extend(conversation("c1"))
    [offer] = events_of(log.step(at(1), RouterPolicy(escalation_steps=())), AgentOffered)
    log.append(AgentStatusChanged(at=at(2), agent_id="ava", status="away"))
    log.append(OfferAccepted(at=at(3), customer_id="cu-c1", conversation_id="c1", agent_id=offer.agent_id))
    assert log.state.conversations["c1"].status == "assigned"


def test_agent_known_only_by_profile_is_offline() -> None:
    log = Log()
    log.extend(agent("ava", status="offline"))
    assert log.state.agents["ava"].status == "offline"
    log.extend(conversation("c1"))
    assert log.step(at(1), POLICY) == []
