"""The router's side of a language correction (``ConversationLanguageChanged``): pure, no NATS."""

from __future__ import annotations

from events.model import AgentOffered, ConversationAssigned, ConversationLanguageChanged, OfferAccepted
from router.snapshot import dump
from tests.unit.router.helpers import Log, agent, at, conversation, events_of


def changed(conversation_id: str, language: str, seconds: float) -> ConversationLanguageChanged:
    return ConversationLanguageChanged(
        at=at(seconds), customer_id=f"cu-{conversation_id}", conversation_id=conversation_id, language=language
    )


def test_a_waiting_conversation_goes_to_an_agent_of_its_new_language() -> None:
    log = Log()
    log.extend([*agent("sofia", languages={"es": 5}), *conversation("cv1", language="en")])
    assert log.step(at(1)) == []  # nobody speaks English
    log.append(changed("cv1", "es", 5))
    decisions = log.step(at(6))
    offers = events_of(decisions, AgentOffered) + events_of(decisions, ConversationAssigned)
    assert [o.agent_id for o in offers] == ["sofia"]
    assert log.state.conversations["cv1"].waiting_since == at(0)  # it kept its place in the queue
    assert dump(log.replay()) == dump(log.state)  # replaying the log gives the same state


def test_an_assigned_conversation_keeps_its_agent() -> None:
    log = Log()
    log.extend([*agent("ava", languages={"en": 5}), *agent("sofia", languages={"es": 5})])
    log.extend(conversation("cv1", language="en"))
    [offer] = events_of(log.step(at(1)), AgentOffered)
    log.append(OfferAccepted(at=at(2), customer_id="cu-cv1", conversation_id="cv1", agent_id=offer.agent_id))
    log.append(changed("cv1", "es", 3))
    assert log.step(at(4)) == []
    view = log.state.conversations["cv1"]
    assert (view.status, view.agent_id, view.requirements.language) == ("assigned", "ava", "es")
