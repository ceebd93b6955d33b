"""The embedded nats-server of `relaydesk up` and of the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.bus.embedded import EmbeddedNats, port_is_free

pytestmark = pytest.mark.integration

STARTS_AND_DIES = """
import os, sys
from pathlib import Path
from services.bus.embedded import EmbeddedNats
server = EmbeddedNats(store_dir=Path(sys.argv[1]))
server.start()
print(server.process.pid, flush=True)
os.kill(os.getpid(), 9)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is as good as gone
        return stat.read().split()[2] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux-only")
def test_the_server_does_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", STARTS_AND_DIES, str(tmp_path / "js")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parents[2],
    )
    pid = int(out.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), "nats-server kept running after its parent was killed"


def test_stop_frees_the_port_and_keeps_the_data(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "js")
    server.start()
    port = server.port
    server.stop()
    assert port_is_free("127.0.0.1", port)
    assert (tmp_path / "js" / "nats-server.log").exists()
