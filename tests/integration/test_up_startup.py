"""``relaydesk up`` starting: a service that cannot start stops the whole process at once, with
the reason first and no nats-server left behind; ``enabled = false`` disables a connector; the
banner shows every address a connector listens on (the email connector's SMTP too)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.bus.embedded import EmbeddedNats, free_port
from services.config import load
from services.up import Started, enabled_connectors, serve_all, with_built_in_connectors
from tests.integration.system import API_TOKEN, exit_reason, system_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port somebody else already listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def nats_servers_using(store_dir: Path) -> list[int]:
    """Pids of nats-server processes whose command line names ``store_dir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if state != "Z" and any(b"nats-server" in part for part in cmdline[:1]) and str(store_dir).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def up_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    env.update(
        {
            "RELAYDESK_DATA_DIR": str(tmp_path / "data"),
            "RELAYDESK_NATS_PORT": str(free_port()),  # never the machine's own 4222
            "RELAYDESK_API_PORT": str(free_port()),
            "RELAYDESK_CONNECTOR_SMS_PORT": str(free_port()),
            "RELAYDESK_CONNECTOR_EMAIL_PORT": str(free_port()),
            "RELAYDESK_CONNECTOR_EMAIL_SMTP_PORT": str(free_port()),
            "RELAYDESK_CONNECTOR_SOCIAL_PORT": str(free_port()),
            "RELAYDESK_CONNECTOR_CHAT_PORT": str(free_port()),
            "RELAYDESK_API_TOKEN": API_TOKEN,
            **overrides,
        }
    )
    return env


@pytest.mark.skipif(sys.platform != "linux", reason="finds the nats-server child through /proc")
def test_up_with_the_sms_port_taken_exits_1_at_once_with_the_reason_first(tmp_path: Path, taken_port: int) -> None:
    env = up_env(tmp_path, RELAYDESK_CONNECTOR_SMS_PORT=str(taken_port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A deadline for "it stops by itself instead of hanging", not a speed: on a loaded
        # machine the imports alone take seconds.
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"relaydesk up did not exit within 60 s; stderr:\n{stderr[-3000:]}")
    assert proc.returncode == 1, stderr[-3000:]
    reason = f"connector sms cannot listen on 127.0.0.1:{taken_port}"
    assert reason in stderr, stderr[-3000:]
    assert "RELAYDESK_CONNECTOR_SMS_PORT" in stderr, stderr[-3000:]
    assert "relaydesk: stopped" in stderr
    assert stderr.index(reason) < stderr.index("relaydesk: stopped"), stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "outbound.fetch_failed" not in stderr, stderr[-3000:]
    assert nats_servers_using(tmp_path / "data" / "nats") == [], "the embedded nats-server outlived relaydesk up"


def test_a_service_run_alone_with_its_port_taken_says_why_in_one_line(
    tmp_path: Path, clean_nats: EmbeddedNats, taken_port: int
) -> None:
    # No health listener: a service run alone fails on a taken health port too, and another
    # `relaydesk up` on this machine may hold the default one.
    env = up_env(
        tmp_path, RELAYDESK_NATS_URL=clean_nats.url, RELAYDESK_API_PORT=str(taken_port), RELAYDESK_HEALTH_PORT="0"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "api"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    # One line, in the logs' format (JSON off a terminal): a log pipeline keeps it.
    assert exit_reason(proc.stderr).startswith(f"API cannot listen on 127.0.0.1:{taken_port}"), proc.stderr[-3000:]
    # ...and how to choose another (a neighbour often has 8080).
    assert "RELAYDESK_API_PORT" in exit_reason(proc.stderr) and "--api-port" in exit_reason(proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


async def test_serve_all_with_the_api_port_taken_returns_1_promptly(
    tmp_path: Path, clean_nats: EmbeddedNats, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    config.api.port = taken_port
    stop = asyncio.Event()
    started: list[Started] = []
    code = await asyncio.wait_for(serve_all(config, clean_nats.url, API_TOKEN, stop, started.append), 60)
    assert code == 1
    assert started == []  # no banner for a system that did not start
    assert f"api failed: API cannot listen on 127.0.0.1:{taken_port}" in capsys.readouterr().err


def test_enabled_false_disables_a_connector_from_toml_and_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "relaydesk.toml"
    path.write_text("[connectors.sms]\nenabled = false\n\n[connectors.social]\nenabled = true\n")
    env = {"RELAYDESK_CONNECTOR_EMAIL_ENABLED": "Off", "RELAYDESK_CONNECTOR_CHAT_ENABLED": "yes"}
    config = with_built_in_connectors(load(path, env=env), tmp_path)
    assert sorted(enabled_connectors(config)) == ["chat", "social"]
    for value in (False, "false", "FALSE", "0", "no", "off", 0):
        config.connectors["chat"]["enabled"] = value
        assert "chat" not in enabled_connectors(config), value
    for value in (True, "true", "1", "yes", "on", 1):
        config.connectors["chat"]["enabled"] = value
        assert "chat" in enabled_connectors(config), value


async def test_the_banner_shows_the_email_connectors_smtp_listener(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    config = system_config(tmp_path, clean_nats.url)
    smtp_port = free_port()
    config.connectors["email"] = {"port": free_port(), "smtp_port": smtp_port}
    stop = asyncio.Event()
    started: list[Started] = []
    task = asyncio.create_task(serve_all(config, clean_nats.url, API_TOKEN, stop, started.append))
    try:
        deadline = time.monotonic() + 20
        while not started and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert started, "the system did not start"
        urls = started[0].connector_urls["email"]
        assert f"smtp://127.0.0.1:{smtp_port}" in urls, urls
        assert any(url.startswith("http://") for url in urls), urls
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0
