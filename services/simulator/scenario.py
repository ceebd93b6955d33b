"""A simulation scenario: plain data decoded from TOML (``relaydesk simulate SCENARIO.toml``).

Every table but ``[channels]`` and ``[[agents]]`` is optional; see the shipped
``scenarios/*.toml`` for annotated examples.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from router.policy import RouterPolicy

POLICIES = ("relaydesk", "chatwoot", "rocketchat", "taskrouter")


class Mix(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shares of arrivals (weights, normalised) by language, customer tier and required skill."""

    languages: dict[str, float] = msgspec.field(default_factory=lambda: {"en": 1.0})
    tiers: dict[str, float] = msgspec.field(default_factory=lambda: {"standard": 1.0})
    skills: dict[str, float] = msgspec.field(default_factory=lambda: {"general": 1.0})
    skill_level: int = 1  # minimum level required of the skill
    flagged: float = 0.0  # share of customers flagged (e.g. regulatory_risk): specialists only


class Channel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    sla_seconds: float  # service level target: answered (assigned / accepted) within this
    handle_mean_seconds: float
    # "lognormal" (coefficient of variation ``handle_cv``) or "exponential" (Erlang's assumption).
    distribution: str = "lognormal"
    handle_cv: float = 0.6
    # Mean patience (exponential, Erlang-A); 0: customers never abandon.
    patience_mean_seconds: float = 0.0
    # Arrivals per hour: ``rate_per_hour`` times ``profile[hour of day]`` (24 multipliers; none: flat).
    rate_per_hour: float = 0.0
    profile: tuple[float, ...] = ()
    mix: Mix | None = None  # overrides the scenario's mix for this channel


class AgentGroup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``count`` agents alike, named ``prefix-1`` … ``prefix-count``."""

    prefix: str
    count: int = 1
    skills: dict[str, int] = msgspec.field(default_factory=lambda: {"general": 3})
    languages: dict[str, int] = msgspec.field(default_factory=lambda: {"en": 5})
    tier: int = 1
    capacity: dict[str, int] = msgspec.field(default_factory=lambda: {"chat": 3, "email": 5})
    shift: tuple[float, float] = (0.0, 24.0)  # hours of each day on shift (end may pass 24)


class Surge(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An outage: arrivals times ``factor`` from ``start_hour`` for ``hours`` (hours since the start)."""

    start_hour: float
    hours: float = 1.0
    factor: float = 5.0
    channels: tuple[str, ...] = ()  # none: every channel
    skill: str | None = None  # the outage's topic: every surge arrival needs this skill


class Offers(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How agents answer offers (router offers, TaskRouter reservations)."""

    decline_rate: float = 0.0
    expire_rate: float = 0.0
    accept_seconds: float = 3.0
    decline_seconds: float = 5.0
    away_seconds: float = 120.0  # an agent set away for letting offers expire comes back after this


class Transfers(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An agent who lacks the skill or the language transfers the conversation after ``after_seconds``."""

    after_seconds: float = 60.0
    max: int = 2  # after this many transfers, whoever has it serves it


class Simulation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str = "scenario"
    seed: int = 1
    hours: float = 24.0
    warmup_hours: float = 0.0  # arrivals before this are simulated but not measured
    policies: tuple[str, ...] = POLICIES
    sample_seconds: float = 60.0  # queue length sampling period


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    simulation: Simulation = msgspec.field(default_factory=Simulation)
    channels: dict[str, Channel]
    mix: Mix = msgspec.field(default_factory=Mix)
    agents: tuple[AgentGroup, ...]
    surges: tuple[Surge, ...] = ()
    offers: Offers = msgspec.field(default_factory=Offers)
    transfers: Transfers = msgspec.field(default_factory=Transfers)
    router: RouterPolicy = msgspec.field(default_factory=RouterPolicy)

    def mix_for(self, channel: str) -> Mix:
        return self.channels[channel].mix or self.mix


class ScenarioError(ValueError):
    pass


def check_simulation(simulation: Simulation) -> None:
    """The ``[simulation]`` table (after ``--hours``/``--seed``/``--policies``): a negative or
    zero length ran and printed a table of nothing."""
    for policy in simulation.policies:
        if policy not in POLICIES:
            raise ScenarioError(f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
    if not simulation.hours > 0:
        raise ScenarioError(f"simulation.hours must be above 0, not {simulation.hours:g}")
    if not 0 <= simulation.warmup_hours < simulation.hours:
        raise ScenarioError(
            f"simulation.warmup_hours must be 0 or more and below hours ({simulation.hours:g}), "
            f"not {simulation.warmup_hours:g}"
        )
    if not simulation.sample_seconds > 0:
        raise ScenarioError(f"simulation.sample_seconds must be above 0, not {simulation.sample_seconds:g}")


def parse(table: dict[str, Any]) -> Scenario:
    try:
        scenario = msgspec.convert(table, Scenario, strict=False)
    except msgspec.ValidationError as exc:
        raise ScenarioError(str(exc)) from exc
    check_simulation(scenario.simulation)
    for name, channel in scenario.channels.items():
        if channel.profile and len(channel.profile) != 24:
            raise ScenarioError(f"channels.{name}.profile needs 24 hourly multipliers")
        if channel.distribution not in ("lognormal", "exponential"):
            raise ScenarioError(f"channels.{name}.distribution: lognormal or exponential")
    return scenario


def load(path: Path) -> Scenario:
    with path.open("rb") as handle:
        return parse(tomllib.load(handle))
