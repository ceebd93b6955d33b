"""The real router as a simulated policy: events folded with ``evolve``, ``decide`` on a
simulated clock, its decisions appended as the runner appends them (no NATS)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events import subjects
from events.model import (
    AgentOffered,
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    ConversationAssigned,
    ConversationOpened,
    ConversationResolved,
    ConversationTransferred,
    CustomerProfileUpdated,
    LogEvent,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    Requirements,
    RoutingRequested,
)
from router.decide import decide
from router.fold import evolve
from router.policy import RouterPolicy
from router.state import RouterState
from services.simulator.arrivals import Agent, Arrival
from services.simulator.policy import Action, Assign, Expired, Offer, SetAway

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; only differences of times matter
FLAG = "regulatory_risk"


def when(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


class RelaydeskPolicy:
    name = "relaydesk"

    def __init__(self, policy: RouterPolicy) -> None:
        self.policy = policy
        self.state = RouterState()
        self.seq = 0
        self.customers: dict[str, str] = {}  # conversation id -> customer id

    def _append(self, event: LogEvent) -> None:
        self.seq += 1
        evolve(self.state, self.seq, subjects.for_event(event), event)

    def start(self, agents: list[Agent]) -> None:
        for agent in agents:
            profile = AgentProfile(
                name=agent.agent_id,
                skills=agent.skills,
                languages=agent.languages,
                tier=agent.tier,
                capacity=agent.capacity,
            )
            self._append(AgentProfileUpdated(at=START, agent_id=agent.agent_id, profile=profile))

    def agent_status(self, now: float, agent_id: str, status: str) -> None:
        self._append(AgentStatusChanged(at=when(now), agent_id=agent_id, status=status))  # type: ignore[arg-type]

    def _step_wakes(self, now: float) -> list[float]:
        """Times its escalation steps fall due. (Every arrival is a new customer, so no
        conversation is held for a case owner: ``hold_seconds`` never applies.)"""
        return [now + step.after_seconds for step in self.policy.escalation_steps]

    def arrive(self, now: float, arrival: Arrival) -> list[float]:
        at = when(now)
        customer = f"cu-{arrival.conversation_id}"
        self.customers[arrival.conversation_id] = customer
        if arrival.tier != "standard" or arrival.flagged:
            flags = (FLAG,) if arrival.flagged else ()
            self._append(CustomerProfileUpdated(at=at, customer_id=customer, tier=arrival.tier, flags=flags))
        cid = arrival.conversation_id
        self._append(
            ConversationOpened(at=at, customer_id=customer, conversation_id=cid, channel=arrival.channel, contact="x")
        )
        requirements = Requirements(skills={arrival.skill: arrival.level}, language=arrival.language)
        self._append(
            RoutingRequested(
                at=at, customer_id=customer, conversation_id=cid, channel=arrival.channel, requirements=requirements
            )
        )
        return self._step_wakes(now)

    def answer_offer(self, now: float, conversation_id: str, agent_id: str, accepted: bool) -> list[float]:
        customer = self.customers[conversation_id]
        kind = OfferAccepted if accepted else OfferDeclined
        self._append(kind(at=when(now), customer_id=customer, conversation_id=conversation_id, agent_id=agent_id))
        return []

    def transfer(self, now: float, conversation_id: str, agent_id: str, skill: str) -> list[float]:
        customer = self.customers[conversation_id]
        event = ConversationTransferred(
            at=when(now), customer_id=customer, conversation_id=conversation_id, from_agent=agent_id, to_skill=skill
        )
        self._append(event)
        return self._step_wakes(now)

    def resolve(self, now: float, conversation_id: str, agent_id: str | None) -> list[float]:
        customer = self.customers.pop(conversation_id)
        self._append(
            ConversationResolved(at=when(now), customer_id=customer, conversation_id=conversation_id, agent_id=agent_id)
        )
        if agent_id is None:
            return []
        # Wrap-up ends are no events: look again when each channel's wrap-up would end.
        return [now + seconds for seconds in set(self.policy.wrap_up_seconds.values()) if seconds > 0]

    def route(self, now: float) -> tuple[list[Action], list[float]]:
        """Decide, append, fold, and decide again until the router has nothing more to say."""
        actions: list[Action] = []
        wakes: list[float] = []
        for _ in range(100):  # a round's decisions are folded before the next round decides
            decisions = decide(self.state, when(now), self.policy)
            if not decisions:
                break
            for decision in decisions:
                event = decision.event
                self._append(event)
                match event:
                    case AgentOffered():
                        actions.append(Offer(event.conversation_id, event.agent_id))
                        wakes.append((event.expires_at - START).total_seconds())
                    case ConversationAssigned():
                        actions.append(Assign(event.conversation_id, event.agent_id))
                    case OfferExpired():
                        actions.append(Expired(event.conversation_id, event.agent_id))
                    case AgentStatusChanged() if event.status == "away":
                        actions.append(SetAway(event.agent_id))
        return actions, wakes
