"""The worked example of router/README.md, step by step (keep the two in step)."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime

import msgspec

from events.model import (
    AgentOffered,
    AgentStatusChanged,
    ConversationAssigned,
    ConversationResolved,
    CustomerProfileUpdated,
    EscalationStepReached,
    OfferAccepted,
)
from router.policy import RouterPolicy
from tests.unit.router.helpers import Log, agent, conversation, events_of, holder

CONFIG = """
[router]
offer_channels = ["chat"]
case_owner_wait_seconds = 20
escalation_steps = [
  { after_seconds = 20, relaxation = "allow_tier_up" },
  { after_seconds = 45, relaxation = "fallback_language" },
]
"""


def clock(hms: str) -> datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return datetime(2026, 1, 5, h, m, s, tzinfo=UTC)


def test_the_worked_example() -> None:
    policy = msgspec.convert(tomllib.loads(CONFIG)["router"], RouterPolicy, strict=False)
    chat1 = {"chat": 1, "email": 5}
    log = Log()
    log.extend(agent("ava", skills={"billing": 3}, languages={"en": 5}, capacity=chat1))
    log.extend(agent("bruno", skills={"billing": 3}, languages={"es": 5, "en": 4}, capacity={"chat": 3, "email": 5}))
    log.extend(
        agent(
            "chen", tier=2, skills={"technical": 5, "billing": 2}, languages={"en": 5}, capacity={"chat": 3, "email": 5}
        )
    )

    # 1. A Spanish chat about an invoice: only Bruno speaks Spanish.
    log.extend(conversation("c1", customer_id="maria", language="es", when=clock("09:00:00")))
    [offer] = events_of(log.step(clock("09:00:00"), policy), AgentOffered)
    assert offer.agent_id == "bruno" and offer.expires_at == clock("09:00:30") and offer.reason.rule == "best_fit"
    log.append(OfferAccepted(at=clock("09:00:05"), customer_id="maria", conversation_id="c1", agent_id="bruno"))
    assert log.state.conversations["c1"].status == "assigned"

    # 2. An English billing email is assigned directly: Ava (frontline, idle) over Bruno; Chen kept free.
    log.extend(conversation("e1", customer_id="ed", channel="email", when=clock("09:01:00")))
    [assigned] = events_of(log.step(clock("09:01:00"), policy), ConversationAssigned)
    assert assigned.agent_id == "ava"

    # 3. A platinum customer on chat: only a tier-2 agent may take it; Chen gets the offer at once.
    log.append(CustomerProfileUpdated(at=clock("09:02:00"), customer_id="pat", tier="platinum"))
    log.extend(conversation("p1", customer_id="pat", when=clock("09:02:00")))
    [offer] = events_of(log.step(clock("09:02:00"), policy), AgentOffered)
    assert offer.agent_id == "chen"
    log.append(OfferAccepted(at=clock("09:02:10"), customer_id="pat", conversation_id="p1", agent_id="chen"))

    # 4. Maria comes back; Bruno (her case owner) is away: held for him, then the steps.
    log.append(ConversationResolved(at=clock("09:02:30"), customer_id="maria", conversation_id="c1"))
    log.append(AgentStatusChanged(at=clock("09:02:40"), agent_id="bruno", status="away"))
    log.extend(conversation("c2", customer_id="maria", language="es", when=clock("09:03:00")))
    assert log.step(clock("09:03:00"), policy) == []
    assert log.state.conversations["c2"].is_held()
    [drop] = events_of(log.step(clock("09:03:20"), policy), EscalationStepReached)
    assert (drop.step, drop.relaxation) == (0, "drop_preferred")
    [step1] = events_of(log.step(clock("09:03:20"), policy), EscalationStepReached)
    assert (step1.step, step1.relaxation) == (1, "allow_tier_up")
    assert log.step(clock("09:03:44"), policy) == []  # nobody else speaks Spanish
    [step2] = events_of(log.step(clock("09:03:45"), policy), EscalationStepReached)
    assert (step2.step, step2.relaxation) == (2, "fallback_language")
    [offer] = events_of(log.step(clock("09:03:45"), policy), AgentOffered)
    assert offer.agent_id == "ava" and offer.reason.step == 2
    assert holder(log, "c2") == "ava"
