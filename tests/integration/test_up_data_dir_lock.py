"""One ``relaydesk up`` per data dir (services.data_dir): a second one on the same data dir
is refused at once with the first one's pid, starts no nats-server on its store and leaves the
first one's files alone (``relaydesk status`` still finds it); another data dir runs beside it;
and once the first is killed with -9 the lock is gone with it, so a new ``up`` starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.integration.test_up_startup import REPO, nats_servers_using, up_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="flock, and the nats-server child found through /proc"),
]

BANNER = "Ctrl-C stops everything."
# Deadlines for "it happens by itself", not speeds: on a loaded machine the imports alone take seconds.
START_SECONDS = 90.0
EXIT_SECONDS = 60.0


def wait_for(condition: Callable[[], bool], what: str, seconds: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"{what}: not within {seconds} s\n{tail}")
        time.sleep(0.05)


class Up:
    """A ``relaydesk up`` process, its output in a file (a pipe nobody reads would fill up)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up"], env=env, cwd=REPO, stdout=self._out, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self) -> None:
        wait_for(lambda: BANNER in self.output() or self.proc.poll() is not None, "the banner", START_SECONDS, self.log)
        assert self.proc.poll() is None, f"relaydesk up exited with {self.proc.returncode}:\n{self.output()[-3000:]}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            pytest.fail(f"relaydesk up did not stop within {EXIT_SECONDS} s:\n{self.output()[-3000:]}")
        finally:
            self._out.close()
        return code


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    """Every ``up`` a test starts, stopped at its end whatever happened."""
    started: list[Up] = []
    yield started
    for up in started:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()


def relaydesk(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=EXIT_SECONDS,
    )


def server_starts(store: Path) -> int:
    """How many times a nats-server has started on ``store`` (each says so in its log)."""
    log = store / "nats-server.log"
    return log.read_text(errors="replace").count("Starting nats-server") if log.exists() else 0


def test_a_second_up_on_the_same_data_dir_is_refused_and_leaves_the_first_alone(tmp_path: Path, ups: list[Up]) -> None:
    env = up_env(tmp_path)
    data = tmp_path / "data"
    store = data / "nats"
    first = Up(env, tmp_path / "first.log")
    ups.append(first)
    first.wait_started()
    url_file = data / "nats-url"
    url = url_file.read_text()
    url_stat = url_file.stat()
    starts = server_starts(store)
    assert starts == 1 and len(nats_servers_using(store)) == 1

    second = relaydesk(env, "up")  # same data dir, same ports

    assert second.returncode != 0, second.stderr[-3000:]
    refusal = f"relaydesk: another `relaydesk up` (pid {first.proc.pid}) is running with data dir {data.resolve()};"
    assert refusal in second.stderr, second.stderr[-3000:]
    assert "Traceback" not in second.stderr + second.stdout, second.stderr[-3000:]
    assert "nats.embedded.started" not in second.stderr, second.stderr[-3000:]
    assert server_starts(store) == starts, "the second up started a nats-server on the first one's store"
    # The first one's nats-url: there, unchanged, untouched.
    assert url_file.read_text() == url
    assert url_file.stat().st_mtime_ns == url_stat.st_mtime_ns
    assert first.proc.poll() is None
    status = relaydesk(env, "status", "--json")
    assert status.returncode == 0, status.stdout[-2000:] + status.stderr[-2000:]
    assert '"reachable":true' in status.stdout, status.stdout[-2000:]

    # Another data dir (and other ports) runs beside it.
    beside = Up(up_env(tmp_path / "beside"), tmp_path / "beside.log")
    ups.append(beside)
    beside.wait_started()
    assert beside.stop() == 0, beside.output()[-3000:]
    assert first.proc.poll() is None

    # kill -9: the kernel drops the lock with the process (and its nats-server, which holds it
    # too, stops with it): a new up starts, no stale lock to clean up.
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_for(lambda: nats_servers_using(store) == [], "the killed up's nats-server stopping", EXIT_SECONDS)
    third = Up(env, tmp_path / "third.log")
    ups.append(third)
    third.wait_started()
    assert (data / "up.lock").read_text().strip() == str(third.proc.pid)
    assert url_file.exists() and relaydesk(env, "status", "--json").returncode == 0
    assert third.stop() == 0, third.output()[-3000:]
    assert not url_file.exists(), "the nats-url it wrote outlived relaydesk up"
    assert "Traceback" not in third.output(), third.output()[-3000:]
    assert "unhandled exception" not in third.output(), third.output()[-3000:]
    assert os.path.exists(data / "up.lock")  # kept: removing it would race a new holder


def test_a_data_dir_that_cannot_be_made_stops_up_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir's parent should be\n")
    done = relaydesk(up_env(tmp_path), "up", "--data-dir", str(blocker / "data"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and f"cannot create the data dir {blocker / 'data'}" in done.stderr


async def test_a_projector_that_cannot_make_its_data_dir_fails_its_start_with_the_reason(tmp_path: Path) -> None:
    from services.config import load
    from services.runners import ServiceFailed, _open_projection

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir's parent should be\n")
    config = load(env={"RELAYDESK_DATA_DIR": str(blocker / "data"), "RELAYDESK_API_TOKEN": "t"})
    with pytest.raises(ServiceFailed, match="projector cannot open the projection store"):
        await _open_projection(config, readonly=False, service="projector")


def test_a_service_makes_its_data_dir_private(tmp_path: Path) -> None:
    from services.data_dir import make_data_dir

    made = make_data_dir(tmp_path / "new" / "data")
    assert made.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("fault", ["a file", "an empty token", "a directory for a token"])
def test_a_data_dir_or_token_that_cannot_serve_stops_up_before_anything_starts(tmp_path: Path, fault: str) -> None:
    """Found by an audit: an empty ``api-token`` started the API with a token nothing matches
    (the operator locked out without a word), one that was a directory was a traceback, and a
    data dir that was a file read "File exists"."""
    data = tmp_path / "data"
    if fault == "a file":
        data.write_text("not a directory\n")
        expected = f"the data dir {data} is a file, not a directory"
    else:
        data.mkdir(mode=0o700)
        token = data / "api-token"
        if fault == "an empty token":
            token.write_text("")
            expected = f"the operator token {token} is empty; remove it to have a new one made"
        else:
            token.mkdir()
            expected = f"cannot read the operator token {token}: Is a directory; remove it"
    env = up_env(tmp_path)
    del env["RELAYDESK_API_TOKEN"]  # the token is the data dir's
    done = relaydesk(env, "up", "--data-dir", str(data))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and expected in done.stderr, done.stderr
    assert server_starts(data / "nats") == 0  # refused before its NATS started


def test_the_operator_token_is_written_whole_and_kept(tmp_path: Path) -> None:
    from services.bootstrap import api_token
    from services.config import load

    config = load(env={"RELAYDESK_DATA_DIR": str(tmp_path / "data")})
    token, new = api_token(config, config.data_dir)
    assert new and len(token) >= 32
    assert api_token(config, config.data_dir) == (token, False)
    kept = config.data_dir / "api-token"
    assert kept.read_text() == token + "\n" and kept.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in config.data_dir.iterdir()] == ["api-token"]  # no draft left behind
