"""One scenario, every policy it names, on the very same arrivals and roster."""

from __future__ import annotations

from typing import Any

from services.simulator import arrivals as arrivals_
from services.simulator.baselines import baseline
from services.simulator.engine import simulate
from services.simulator.metrics import Run, summarise
from services.simulator.policy import Policy
from services.simulator.relaydesk import RelaydeskPolicy
from services.simulator.scenario import Scenario


def make_policy(name: str, scenario: Scenario) -> Policy:
    if name == "relaydesk":
        return RelaydeskPolicy(scenario.router)
    return baseline(name, scenario)


def run_policy(scenario: Scenario, name: str, arrivals: list[arrivals_.Arrival] | None = None) -> Run:
    drawn = arrivals if arrivals is not None else arrivals_.generate(scenario)
    return simulate(scenario, drawn, make_policy(name, scenario))


def run(scenario: Scenario) -> dict[str, Any]:
    """Figures per policy: ``{"scenario": ..., "seed": ..., "arrivals": n, "policies": {name: summary}}``."""
    drawn = arrivals_.generate(scenario)
    policies = {name: summarise(run_policy(scenario, name, drawn)) for name in scenario.simulation.policies}
    return {
        "scenario": scenario.simulation.name,
        "seed": scenario.simulation.seed,
        "hours": scenario.simulation.hours,
        "arrivals": len(drawn),
        "agents": len(arrivals_.roster(scenario)),
        "policies": policies,
    }
