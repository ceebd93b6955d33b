"""Every ``relaydesk bench`` command runs to its end from a checkout, at a tiny size, and writes
its figures as JSON: a benchmark is not a test, but one that no longer starts is a broken
command (``bench e2e`` once stopped because its two connector processes both wanted the health
port). Nothing here looks at a figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "ingest": ["--webhooks", "100", "--rounds", "1"],
    "route": ["--messages", "100", "--seconds", "1", "--intakes", "1", "--agents", "20"],
    "e2e": ["--webhooks", "40", "--agents", "20", "--connectors", "2"],
    "decide": ["--agents", "50", "--waiting", "200"],
    "rebuild": ["--events", "2000"],
    "restart": ["--events", "2000"],
    "crypto": ["--events", "500", "--customers", "20", "--messages", "20", "--rounds", "1"],
    "language": [],
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_bench_runs_and_writes_its_figures(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    # As an operator runs it: the health port as configured by default, not the tests' 0.
    env = {key: value for key, value in os.environ.items() if key != "RELAYDESK_HEALTH_PORT"}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", name, *TINY[name], "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"bench {name} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    figures = json.loads(out.read_text())
    assert isinstance(figures, dict) and figures, f"bench {name} wrote no figures"
