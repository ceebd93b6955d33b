"""Building logs for router tests: a tiny in-memory log that assigns stream sequences."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import msgspec

from events import subjects
from events.model import (
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    Channel,
    ConversationOpened,
    LogEvent,
    Requirements,
    RoutingRequested,
)
from router.decide import Decision, decide
from router.fold import evolve
from router.index import conversation_valid
from router.policy import RouterPolicy
from router.state import RouterState

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def same_routing_state(a: RouterState, b: RouterState) -> bool:
    """Equal facts and indexes; the step timers compared by what they hold (decide files them
    again in one go when its policy changes, so their heap layout depends on when that was)."""

    def timers(state: RouterState) -> dict[int, list[tuple[float, str, int]]]:
        timers = state.step_timers.items()
        held = {step: sorted(e for e in heap if conversation_valid(state, e)) for step, heap in timers}
        return {step: entries for step, entries in held.items() if entries}

    if timers(a) != timers(b):
        return False
    return msgspec.structs.replace(a, step_timers={}) == msgspec.structs.replace(b, step_timers={})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Log:
    """An append-only list of (seq, subject, event), folded into ``state`` as it grows."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, str, LogEvent]] = []
        self.state = RouterState()
        self.subject_last: dict[str, int] = {}

    def append(self, event: LogEvent) -> int:
        seq = len(self.entries) + 1
        subject = subjects.for_event(event)
        self.entries.append((seq, subject, event))
        self.subject_last[subject] = seq
        evolve(self.state, seq, subject, event)
        return seq

    def extend(self, events: Iterable[LogEvent]) -> None:
        for event in events:
            self.append(event)

    def apply(self, decisions: list[Decision]) -> None:
        """Append decisions as the runner does: a stale expected sequence is a conflict."""
        for decision in decisions:
            subject = subjects.for_event(decision.event)
            if decision.expected is not None:
                assert self.subject_last.get(subject, 0) == decision.expected, "decision made on a stale subject"
            self.append(decision.event)

    def decide(self, now: datetime, policy: RouterPolicy | None = None) -> list[Decision]:
        return decide(self.state, now, policy or RouterPolicy())

    def step(self, now: datetime, policy: RouterPolicy | None = None) -> list[Decision]:
        decisions = self.decide(now, policy)
        self.apply(decisions)
        return decisions

    def replay(self) -> RouterState:
        """The state folded again from the log, as a router restarted with the same policy
        has it (its escalation step plan, ``router.step_plan``, is decide's, not the log's)."""
        state = RouterState()
        state.step_plan = self.state.step_plan
        for seq, subject, event in self.entries:
            evolve(state, seq, subject, event)
        return state


def agent(
    agent_id: str,
    *,
    skills: dict[str, int] | None = None,
    languages: dict[str, int] | None = None,
    tier: int = 1,
    capacity: dict[str, int] | None = None,
    status: str = "available",
    when: datetime = T0,
) -> list[LogEvent]:
    profile = AgentProfile(
        name=agent_id,
        skills=skills if skills is not None else {"billing": 3},
        languages=languages if languages is not None else {"en": 5},
        tier=tier,
        capacity=capacity if capacity is not None else {"chat": 3, "sms": 3, "social": 3, "email": 5},
    )
    events: list[LogEvent] = [AgentProfileUpdated(at=when, agent_id=agent_id, profile=profile)]
    if status != "offline":
        events.append(AgentStatusChanged(at=when, agent_id=agent_id, status=status))  # type: ignore[arg-type]
    return events


def conversation(
    conversation_id: str,
    *,
    customer_id: str | None = None,
    channel: Channel = "chat",
    skills: dict[str, int] | None = None,
    language: str | None = "en",
    priority: int = 0,
    public: bool = False,
    when: datetime = T0,
    **requirements: object,
) -> list[LogEvent]:
    customer = customer_id or f"cu-{conversation_id}"
    req = Requirements(
        skills=skills if skills is not None else {"billing": 1},
        language=language,
        priority=priority,
        **requirements,  # type: ignore[arg-type]
    )
    return [
        ConversationOpened(
            at=when, customer_id=customer, conversation_id=conversation_id, channel=channel, contact="x", public=public
        ),
        RoutingRequested(
            at=when, customer_id=customer, conversation_id=conversation_id, channel=channel, requirements=req
        ),
    ]


def events_of(decisions: list[Decision], kind: type) -> list:  # type: ignore[type-arg]
    return [d.event for d in decisions if isinstance(d.event, kind)]


def holder(log: Log, conversation_id: str) -> str | None:
    return log.state.conversations[conversation_id].agent_id
