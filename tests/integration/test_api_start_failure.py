"""A service that cannot open what it is configured to use does not start: the API (and the
projector) with a projection DSN it cannot reach exits with the reason in one line, instead of
serving without timelines while /readyz says ready."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.bus.embedded import free_port
from tests.integration.system import exit_reason

pytestmark = pytest.mark.integration


def start_with_dsn(command: str, dsn: str, nats_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``relaydesk <command>`` with ``RELAYDESK_PROJECTION_DSN=dsn``, run in ``tmp_path`` until it
    exits. A deadline, not a sleep: a service that starts anyway would still be running at it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    env.update(
        {
            "RELAYDESK_NATS_URL": nats_url,
            "RELAYDESK_DATA_DIR": str(tmp_path / "data"),
            "RELAYDESK_API_TOKEN": "test-operator-token",
            "RELAYDESK_API_PORT": str(free_port()),
            "RELAYDESK_HEALTH_PORT": "0",
            "RELAYDESK_PROJECTION_DSN": dsn,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "services.cli", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(("command", "who"), [("api", "API"), ("projector", "projector")])
def test_an_unreachable_projection_dsn_fails_the_start(nats_url: str, tmp_path: Path, command: str, who: str) -> None:
    # Port 1: nobody listens, the connection is refused at once.
    proc = start_with_dsn(command, "postgresql://nobody:hunter2@127.0.0.1:1/x", nats_url, tmp_path)
    assert proc.returncode != 0
    reason = exit_reason(proc.stderr)
    assert f"{who} cannot open the projection store postgresql://nobody:****@127.0.0.1:1/x" in reason, proc.stderr
    assert "hunter2" not in proc.stderr


@pytest.mark.parametrize("command", ["api", "projector"])
def test_a_projection_dsn_of_another_database_fails_the_start(nats_url: str, tmp_path: Path, command: str) -> None:
    """``RELAYDESK_PROJECTION_DSN=mysql://…`` was taken as a relative SQLite path: the service
    started, writing timelines into ``./mysql:/…`` where nothing else reads them."""
    proc = start_with_dsn(command, "mysql://rd:hunter2@db.internal/relaydesk", nats_url, tmp_path)
    assert proc.returncode != 0
    assert "mysql:// is not a timelines store" in exit_reason(proc.stderr), proc.stderr
    assert "hunter2" not in proc.stderr
    assert not (tmp_path / "mysql:").exists()
