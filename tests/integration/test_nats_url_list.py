"""``[nats] url`` as a list of servers (a cluster): a TOML list and a comma-separated string
both connect through the real connect path (one of the servers dead) and append to the log,
and the one-shot tools take the same list."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events import subjects
from events.model import AgentStatusChanged
from events.store import Append
from services.bootstrap import connect
from services.bus.embedded import free_port
from services.config import Config, load

pytestmark = pytest.mark.integration


def dead_url() -> str:
    return f"nats://127.0.0.1:{free_port()}"  # nobody listens there


async def append_and_read_back(config: Config, uid: str) -> None:
    async with connect(config, name="url-list-test") as bus:
        agent = f"urls-{uid}"
        event = AgentStatusChanged(at=datetime.now(UTC), agent_id=agent, status="away", actor="test")
        seq = await bus.store.append(Append(event, expected=0))
        assert await bus.store.last_subject_seq(subjects.agent(agent)) == seq


async def test_a_toml_list_with_a_dead_server_connects_and_appends(nats_url: str, tmp_path: Path, uid: str) -> None:
    path = tmp_path / "relaydesk.toml"
    path.write_text(f'[nats]\nurl = ["{dead_url()}", "{nats_url}"]\n[data]\ndir = "{tmp_path / "data"}"\n')
    config = load(path, env={})
    assert config.nats.url.count(",") == 1
    await append_and_read_back(config, uid)


async def test_a_comma_separated_string_connects_and_appends(nats_url: str, tmp_path: Path, uid: str) -> None:
    config = load(env={"RELAYDESK_NATS_URL": f"{dead_url()}, {nats_url}", "RELAYDESK_DATA_DIR": str(tmp_path)})
    await append_and_read_back(config, uid)


def relaydesk(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_tools_take_a_list_of_servers(nats_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    env["RELAYDESK_DATA_DIR"] = str(tmp_path / "data")
    env["RELAYDESK_NATS_URL"] = f"{dead_url()},{nats_url}"
    setup = relaydesk("setup", env=env)  # connect() as the tool role
    assert setup.returncode == 0, setup.stderr
    assert "streams and buckets ready" in setup.stdout
    listing = relaydesk("dlq", "list", env=env)  # connect_for_tool()
    assert listing.returncode == 0, listing.stderr
    env["RELAYDESK_NATS_URL"] = f"{nats_url},,"
    refused = relaydesk("setup", env=env)
    assert refused.returncode == 1
    assert "has an empty entry" in refused.stderr
