"""What a run measured, and the figures per policy (service level, speed of answer, abandonment,
occupancy and its spread, skill and language match, specialists on frontline work, transfers,
VIP wait), per channel and per hour."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from services.simulator.arrivals import Arrival
from services.simulator.scenario import Scenario


@dataclass
class ConversationRecord:
    conversation_id: str
    channel: str
    arrived_at: float
    vip: bool
    measured: bool  # False during the warm-up
    answered_at: float | None = None  # first time an agent had it (accepted or assigned)
    abandoned_at: float | None = None
    fit_at: float | None = None  # first time an agent with the skill and the language had it
    agent_id: str | None = None  # the first agent who had it
    skill_match: bool = False
    language_match: bool = False
    transfers: int = 0
    offers: int = 0

    @classmethod
    def of(cls, arrival: Arrival, measured: bool) -> ConversationRecord:
        return cls(arrival.conversation_id, arrival.channel, arrival.at, arrival.vip, measured)

    @property
    def wait(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.arrived_at


@dataclass
class AgentRecord:
    agent_id: str
    tier: int
    skills: dict[str, int]
    shift_seconds: float = 0.0
    shift_started: float = 0.0
    busy_seconds: float = 0.0  # on shift with at least one conversation
    overtime_seconds: float = 0.0  # finishing conversations after the shift ended
    work_seconds: float = 0.0  # summed over conversations (concurrent chats add up)
    frontline_seconds: float = 0.0  # a specialist (tier >= 2) on a standard, unflagged customer's work


@dataclass
class Run:
    policy: str
    scenario: Scenario
    conversations: list[ConversationRecord] = field(default_factory=list)
    agents: list[AgentRecord] = field(default_factory=list)
    queue_samples: list[tuple[float, int]] = field(default_factory=list)  # (time, waiting)


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def service_level(records: list[ConversationRecord], target: float) -> float | None:
    """Answered within ``target`` seconds, of all arrivals (abandoned ones count as missed)."""
    return _share([r.wait is not None and r.wait <= target for r in records])


def right_agent_level(records: list[ConversationRecord], targets: dict[str, float]) -> float | None:
    """With an agent who has the skill and speaks the language within the channel's target."""
    return _share([r.fit_at is not None and r.fit_at - r.arrived_at <= targets[r.channel] for r in records])


def _channel(records: list[ConversationRecord], target: float) -> dict[str, Any]:
    waits = [r.wait for r in records if r.wait is not None]
    return {
        "arrivals": len(records),
        "service_level": service_level(records, target),
        "asa_seconds": _mean(waits),
        "abandonment": _share([r.abandoned_at is not None for r in records]),
    }


def summarise(run: Run) -> dict[str, Any]:
    scenario = run.scenario
    records = [r for r in run.conversations if r.measured]
    answered = [r for r in records if r.answered_at is not None]
    channels = {
        name: _channel([r for r in records if r.channel == name], channel.sla_seconds)
        for name, channel in sorted(scenario.channels.items())
    }
    in_target = [r.wait is not None and r.wait <= scenario.channels[r.channel].sla_seconds for r in records]
    occupancy = {a.agent_id: a.busy_seconds / a.shift_seconds for a in run.agents if a.shift_seconds > 0}
    values = list(occupancy.values())
    specialists = [a for a in run.agents if a.tier >= 2]
    specialist_work = sum(a.work_seconds for a in specialists)
    vip_waits = [r.wait for r in answered if r.vip and r.wait is not None]
    return {
        "policy": run.policy,
        "arrivals": len(records),
        "service_level": _share(in_target),
        "right_agent_service_level": right_agent_level(
            records, {name: channel.sla_seconds for name, channel in scenario.channels.items()}
        ),
        "asa_seconds": _mean([r.wait for r in answered if r.wait is not None]),
        "abandonment": _share([r.abandoned_at is not None for r in records]),
        "skill_match": _share([r.skill_match for r in answered]),
        "language_match": _share([r.language_match for r in answered]),
        "transfers": sum(r.transfers for r in records),
        "vip_asa_seconds": _mean(vip_waits),
        "vip_service_level": _share([flag for r, flag in zip(records, in_target, strict=True) if r.vip]),
        "occupancy_mean": _mean(values),
        "occupancy_spread": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "occupancy_range": (max(values) - min(values)) if values else 0.0,
        "specialist_frontline_share": specialist_work
        and sum(a.frontline_seconds for a in specialists) / specialist_work,
        "channels": channels,
        "hourly": hourly(run),
        "occupancy": occupancy,
    }


def hourly(run: Run) -> dict[str, list[float | None]]:
    """Per hour since the start: service level of that hour's arrivals, and the mean queue length."""
    hours = int(run.scenario.simulation.hours + 0.999)
    by_hour: list[list[bool]] = [[] for _ in range(hours)]
    for r in run.conversations:
        target = run.scenario.channels[r.channel].sla_seconds
        by_hour[min(int(r.arrived_at // 3600), hours - 1)].append(r.wait is not None and r.wait <= target)
    queue: list[list[int]] = [[] for _ in range(hours)]
    for t, waiting in run.queue_samples:
        queue[min(int(t // 3600), hours - 1)].append(waiting)
    return {
        "service_level": [_share(flags) for flags in by_hour],
        "queue_length": [_mean([float(q) for q in samples]) for samples in queue],
    }
