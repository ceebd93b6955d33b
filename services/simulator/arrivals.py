"""Arrivals and the roster, drawn once per scenario and seed so every policy faces the same day.

Arrivals are a Poisson process whose rate is constant within each hour (per channel: the
channel's rate times its hourly profile, times any surge); each arrival carries everything
about the customer that is random (language, tier, skill, handle time, patience), so the
policies differ only in their routing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from services.simulator.scenario import Channel, Mix, Scenario


@dataclass(frozen=True)
class Arrival:
    conversation_id: str
    at: float  # seconds since the start
    channel: str
    language: str
    skill: str
    level: int
    tier: str  # customer tier
    flagged: bool
    handle_seconds: float
    patience_seconds: float  # math.inf: never abandons

    @property
    def vip(self) -> bool:
        return self.flagged or self.tier != "standard"


@dataclass(frozen=True)
class Agent:
    agent_id: str
    skills: dict[str, int]
    languages: dict[str, int]
    tier: int
    capacity: dict[str, int]
    shift: tuple[float, float]  # hours of each day


def roster(scenario: Scenario) -> list[Agent]:
    return [
        Agent(
            f"{group.prefix}-{n}",
            dict(group.skills),
            dict(group.languages),
            group.tier,
            dict(group.capacity),
            group.shift,
        )
        for group in scenario.agents
        for n in range(1, group.count + 1)
    ]


def shift_periods(agent: Agent, hours: float) -> list[tuple[float, float]]:
    """The agent's on-shift periods in seconds since the start, over ``hours`` (daily shifts)."""
    start, end = agent.shift
    periods: list[tuple[float, float]] = []
    for day in range(-1, math.ceil(hours / 24.0) + 1):  # day -1: a night shift running past midnight
        begin, finish = max((day * 24 + start) * 3600.0, 0.0), (day * 24 + end) * 3600.0
        if begin < hours * 3600.0 and finish > begin:
            if periods and periods[-1][1] >= begin:  # round the clock: one long shift
                begin = periods.pop()[0]
            periods.append((begin, min(finish, hours * 3600.0)))
    return periods


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    names = sorted(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def handle_time(rng: random.Random, channel: Channel) -> float:
    mean = channel.handle_mean_seconds
    if channel.distribution == "exponential":
        return rng.expovariate(1.0 / mean)
    # Lognormal with the given mean and coefficient of variation.
    sigma2 = math.log(1.0 + channel.handle_cv**2)
    return rng.lognormvariate(math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2))


def _rate(scenario: Scenario, name: str, channel: Channel, hour: int) -> tuple[float, str | None]:
    """Arrivals per hour in hour ``hour`` since the start, and the surge's skill if one applies."""
    rate = channel.rate_per_hour * (channel.profile[hour % 24] if channel.profile else 1.0)
    skill = None
    for surge in scenario.surges:
        inside = surge.start_hour <= hour < surge.start_hour + surge.hours
        if inside and (not surge.channels or name in surge.channels):
            rate *= surge.factor
            skill = surge.skill
    return rate, skill


def _customer(rng: random.Random, mix: Mix, surge_skill: str | None) -> tuple[str, str, str, bool]:
    language = _pick(rng, mix.languages)
    tier = _pick(rng, mix.tiers)
    skill = _pick(rng, mix.skills)
    flagged = rng.random() < mix.flagged
    return language, tier, surge_skill or skill, flagged


def generate(scenario: Scenario) -> list[Arrival]:
    """Every arrival of the scenario, in time order (deterministic for a scenario and seed)."""
    rng = random.Random(scenario.simulation.seed)
    arrivals: list[Arrival] = []
    hours = math.ceil(scenario.simulation.hours)
    for name in sorted(scenario.channels):
        channel = scenario.channels[name]
        mix = scenario.mix_for(name)
        for hour in range(hours):
            rate, surge_skill = _rate(scenario, name, channel, hour)
            end = min(hour + 1.0, scenario.simulation.hours) * 3600.0
            t = hour * 3600.0
            while rate > 0:
                t += rng.expovariate(rate / 3600.0)
                if t >= end:
                    break
                language, tier, skill, flagged = _customer(rng, mix, surge_skill)
                patience = (
                    rng.expovariate(1.0 / channel.patience_mean_seconds)
                    if channel.patience_mean_seconds > 0
                    else math.inf
                )
                arrivals.append(
                    Arrival(
                        conversation_id=f"{name}-{len(arrivals) + 1}",
                        at=t,
                        channel=name,
                        language=language,
                        skill=skill,
                        level=mix.skill_level,
                        tier=tier,
                        flagged=flagged,
                        handle_seconds=handle_time(rng, channel),
                        patience_seconds=patience,
                    )
                )
    arrivals.sort(key=lambda a: (a.at, a.conversation_id))
    return arrivals
