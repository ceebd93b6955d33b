"""Self-checks against queueing theory: single skill, single channel, exponential handle times.

Two steps, so the check is both exact and fast: (1) a run of the simulator driving the real
router gives every customer exactly the wait of a first-come-first-served queue on the same
arrivals (``reference.fcfs``); (2) that queue, fed by the simulator's arrival and handle-time
generator for 3,000 simulated hours (~86,000 arrivals), matches Erlang C and Erlang-A. Seeds
1-5 all land within the tolerances below; the test uses seed 1.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from services.simulator.arrivals import generate
from services.simulator.erlang import erlang_a, erlang_c, erlang_c_asa, erlang_c_service_level
from services.simulator.runner import run_policy
from services.simulator.scenario import Scenario, parse
from tests.simulator.reference import fcfs

AGENTS = 10
HANDLE = 300.0  # seconds, exponential
LOAD = 0.8  # offered load per agent
RATE = LOAD * AGENTS / HANDLE  # arrivals per second
TARGET = 20.0
WARMUP = 2 * 3600.0


def single_queue(hours: float, patience: float = 0.0, seed: int = 1) -> Scenario:
    table: dict[str, Any] = {
        "simulation": {"name": "erlang", "seed": seed, "hours": hours, "warmup_hours": WARMUP / 3600},
        "channels": {
            "email": {
                "sla_seconds": TARGET,
                "handle_mean_seconds": HANDLE,
                "distribution": "exponential",
                "rate_per_hour": RATE * 3600,
                "patience_mean_seconds": patience,
            }
        },
        "agents": [{"prefix": "a", "count": AGENTS, "skills": {"general": 1}, "capacity": {"email": 1}}],
        "router": {"escalation_steps": []},
    }
    return parse(table)


def test_erlang_formulas_give_the_textbook_values() -> None:
    # 8 erlangs on 10 agents: P(wait) = 0.4092 (any Erlang C table).
    assert erlang_c(8.0, 1.0, 10) == pytest.approx(0.4092, abs=1e-4)
    assert erlang_c_asa(8.0, 1.0, 10) == pytest.approx(0.4092 / 2.0, abs=1e-4)
    assert erlang_c_service_level(8.0, 1.0, 10, 0.0) == pytest.approx(1 - 0.4092, abs=1e-4)
    # Erlang-A's limits: very patient customers give Erlang C, very impatient ones never wait.
    assert erlang_a(8.0, 1.0, 10, 1e-6)["p_wait"] == pytest.approx(erlang_c(8.0, 1.0, 10), abs=1e-3)
    assert erlang_a(8.0, 1.0, 10, 1e6)["asa_seconds"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("patience", [0.0, 600.0])
def test_the_real_router_serves_first_come_first_served_without_delay(patience: float) -> None:
    scenario = single_queue(hours=24, patience=patience)
    arrivals = generate(scenario)
    expected = fcfs(arrivals, AGENTS)
    run = run_policy(scenario, "relaydesk", arrivals)
    assert len(run.conversations) == len(arrivals) > 1500
    for record in run.conversations:
        want = expected[record.conversation_id]
        if want is None:
            assert record.abandoned_at is not None and record.answered_at is None
        else:
            assert record.wait == pytest.approx(want, abs=1e-3), record.conversation_id


def _measured(scenario: Scenario) -> list[tuple[float | None, float]]:
    arrivals = generate(scenario)
    waits = fcfs(arrivals, AGENTS)
    return [(waits[a.conversation_id], a.patience_seconds) for a in arrivals if a.at >= WARMUP]


def test_no_abandonment_matches_erlang_c() -> None:
    measured = _measured(single_queue(hours=3000))
    waits = [w for w, _ in measured if w is not None]
    assert len(waits) == len(measured) > 80_000
    service_level = sum(w <= TARGET for w in waits) / len(waits)
    assert service_level == pytest.approx(erlang_c_service_level(RATE, 1 / HANDLE, AGENTS, TARGET), abs=0.015)
    assert statistics.fmean(waits) == pytest.approx(erlang_c_asa(RATE, 1 / HANDLE, AGENTS), rel=0.06)


def test_abandonment_matches_erlang_a() -> None:
    patience = 600.0
    measured = _measured(single_queue(hours=3000, patience=patience))
    theory = erlang_a(RATE, 1 / HANDLE, AGENTS, 1 / patience)
    abandoned = sum(w is None for w, _ in measured) / len(measured)
    # Mean time waited by every arrival (the abandoning ones waited their patience): Little's law.
    waited = statistics.fmean(w if w is not None else p for w, p in measured)
    assert abandoned == pytest.approx(theory["abandonment"], rel=0.05)
    assert waited == pytest.approx(theory["asa_seconds"], rel=0.05)
