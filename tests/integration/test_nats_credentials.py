"""A service that cannot use NATS says why and exits, rather than waiting without end.

Found by the long-run audit: a password rotated away on the server left a service up, never
ready, logging refusals for ever; a server that was not there read "no answer in time". Real
nats-servers and a real `relaydesk intake` process, as an operator runs them in a container."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.system import eventually, exit_reason

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]


def _users(password: str) -> str:
    # The server name as EmbeddedNats passes it: a reload refuses a config that changes it.
    users = f'authorization {{ users = [ {{ user: "ops", password: "{password}" }} ] }}\n'
    return 'server_name: "relaydesk-embedded"\n' + users


class Service:
    """``relaydesk intake`` as a process, its stderr collected as it runs."""

    def __init__(self, tmp_path: Path, nats_url: str, password: str, *, connect_timeout: float = 1) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("RELAYDESK_") and key not in {"CI", "PYTEST_CURRENT_TEST"}
        }
        env.update(
            RELAYDESK_NATS_URL=nats_url,
            RELAYDESK_NATS_USER="ops",
            RELAYDESK_NATS_PASSWORD=password,
            RELAYDESK_NATS_CONNECT_TIMEOUT=str(connect_timeout),
            RELAYDESK_DATA_DIR=str(tmp_path / "data"),
            RELAYDESK_LOG_FORMAT="json",
            RELAYDESK_HEALTH_PORT="0",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "intake"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    async def said(self, text: str) -> bool:
        return text in self.stderr

    async def exited(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._reader.join(10)


@pytest.mark.parametrize("how", ["reload", "restart"])
async def test_a_service_whose_password_was_rotated_away_exits_and_says_why(tmp_path: Path, how: str) -> None:
    config = tmp_path / "server.conf"
    config.write_text(_users("first-password"))
    server = EmbeddedNats(store_dir=tmp_path / "js", config_file=config)
    await server.astart()
    service = Service(tmp_path, server.url, "first-password")
    try:
        await eventually(lambda: service.said("intake.started"), timeout=60)
        assert service.proc.poll() is None
        # The operator rotates the password on the server, not (yet) in the service.
        config.write_text(_users("second-password"))
        if how == "reload":  # nats-server reloads its config and closes the connection
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGHUP)
        else:  # restarted on the same port: the service's every reconnect is refused
            await server.astop()
            await server.astart()
        await eventually(service.exited, timeout=60)
    finally:
        service.stop()
        await server.astop()
    assert service.proc.returncode not in (0, None), service.stderr[-3000:]
    reason = exit_reason(service.stderr)  # its last word, one JSON line as its logs
    said = "NATS at " + server.url
    assert reason.startswith((f"{said} refused the credentials (user ops)", f"{said} has refused the credentials")), (
        service.stderr[-3000:]
    )
    assert reason.endswith("were they rotated? Restart with the new [nats] password")
    assert "first-password" not in service.stderr


async def test_a_service_with_no_nats_to_reach_says_the_connection_was_refused(tmp_path: Path) -> None:
    service = Service(tmp_path, f"nats://127.0.0.1:{free_port()}", "whatever")
    try:
        await eventually(service.exited, timeout=60)
    finally:
        service.stop()
    assert service.proc.returncode not in (0, None)
    reason = exit_reason(service.stderr)
    assert reason.startswith("cannot reach NATS at nats://127.0.0.1:"), service.stderr[-3000:]
    assert reason.endswith("connection refused (tried for 3 s)"), service.stderr[-3000:]
    assert all(line.startswith("{") for line in service.stderr.splitlines()), "a line that is not JSON"


async def test_sigterm_while_a_service_still_waits_for_nats_stops_it_at_once(tmp_path: Path) -> None:
    """Found by an audit: start-up waited out its whole budget deaf to SIGTERM (57 s), past
    any supervisor's grace; nothing is in flight yet, so it stops at once and cleanly."""
    service = Service(tmp_path, f"nats://127.0.0.1:{free_port()}", "whatever", connect_timeout=20)
    try:
        await eventually(lambda: service.said('"nats.error"'), timeout=60)  # a refused attempt: waiting
        service.proc.send_signal(signal.SIGTERM)
        await eventually(service.exited, timeout=15)  # not the 60 s its connection budget allows
    finally:
        service.stop()
    assert service.proc.returncode == 0, service.stderr[-3000:]


async def test_a_permission_refused_at_start_fails_the_service_naming_the_user(tmp_path: Path) -> None:
    """Found by an audit: a service run as another role's user waited 60 s and then said
    "NATS did not answer"; a refused permission is not a slow NATS."""
    config = tmp_path / "server.conf"
    config.write_text(
        'server_name: "relaydesk-embedded"\n'
        'authorization { users = [ { user: "ops", password: "pw",'
        ' permissions: { publish: { deny: ["$JS.API.CONSUMER.>"] } } } ] }\n'
    )
    server = EmbeddedNats(store_dir=tmp_path / "js", config_file=config)
    await server.astart()
    service = Service(tmp_path, server.url, "pw")
    try:
        await eventually(service.exited, timeout=45)  # not after the 60 s of patience a slow NATS gets
    finally:
        service.stop()
        await server.astop()
    reason = exit_reason(service.stderr)
    assert service.proc.returncode == 1, service.stderr[-3000:]
    assert reason.startswith("intake's durable consumer: NATS refused it"), reason
    assert reason.endswith("for user ops: is this the service's own NATS user?"), reason
