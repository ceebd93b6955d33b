"""Every one-shot tool stopped by Ctrl-C or SIGTERM says in one line what it left and exits 130
/ 143 (found by an audit: tracebacks, and SIGTERM ending it with nothing said). Held waiting for
its NATS (the server stopped, tests/interrupting.py), each is interrupted mid-way."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import time
from pathlib import Path

import pytest

from services.bus.embedded import EmbeddedNats
from tests.integration.system import eventually
from tests.interrupting import RELAYDESK, asleep_in_epoll, default_sigint, no_traceback

pytestmark = pytest.mark.integration

AGAIN = "run the same command again to be sure it is done (it says so if it is)"
RETRY = "run it again to be sure the retry is done (a re-publish is deduplicated)"
MIGRATE = "the mappings re-keyed so far stay re-keyed; run it again to finish"


@pytest.mark.parametrize(
    ("command", "sig", "said"),
    [
        (["status"], signal.SIGTERM, "nothing was changed"),  # its own asyncio.run (services/status/__init__.py)
        (["dlq", "list"], signal.SIGINT, "nothing was changed"),
        (["dlq", "retry", "inbound.1"], signal.SIGTERM, RETRY),
        (["setup"], signal.SIGINT, "some streams or buckets may be missing; run it again to finish"),
        (["customers", "link", "cu_x", "sms:+15551234567"], signal.SIGTERM, AGAIN),
        (["customers", "migrate-identities"], signal.SIGINT, MIGRATE),
    ],
)  # fmt: skip
async def test_a_tool_waiting_for_nats_stops_in_one_line(
    clean_nats: EmbeddedNats, tmp_path: Path, command: list[str], sig: signal.Signals, said: str
) -> None:
    assert clean_nats.process is not None
    server = clean_nats.process.pid
    env = {**os.environ, "RELAYDESK_DATA_DIR": str(tmp_path / "data"), "RELAYDESK_NATS_URL": clean_nats.url}
    os.kill(server, signal.SIGSTOP)
    try:
        proc = await asyncio.create_subprocess_exec(
            RELAYDESK, *command,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            preexec_fn=default_sigint,
        )  # fmt: skip
        try:

            async def waiting() -> bool:
                assert proc.returncode is None, await proc.communicate()
                return asleep_in_epoll(proc.pid)

            await eventually(waiting, timeout=60, every=0.01)  # its event loop runs: connecting
            proc.send_signal(sig)
            out, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        os.kill(server, signal.SIGCONT)
    err = err_bytes.decode()
    assert proc.returncode == 128 + sig, err
    assert no_traceback(err), err
    assert err == f"relaydesk: interrupted; {said}\n"
    assert out == b""


def test_one_ctrl_c_ends_the_erase_confirmation_prompt(tmp_path: Path) -> None:
    """The prompt blocks the event loop, which a cancellation never reaches: the signal is sent
    again to the main thread, where the prompt waits (before: the first Ctrl-C did nothing)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of its own, where Ctrl-C is SIGINT
        os.environ.update(RELAYDESK_NATS_URL="nats://127.0.0.1:1", RELAYDESK_DATA_DIR=str(tmp_path / "data"))
        os.execv(RELAYDESK, [RELAYDESK, "customers", "erase", "cu_nobody", "--reason", "DSR-1"])
    out = b""
    status: int | None = None
    deadline = time.monotonic() + 60
    sent = False
    try:
        while status is None and time.monotonic() < deadline:
            out += read(fd, 0.05)
            if not sent and b"to go on: " in out:
                os.write(fd, b"\x03")  # one Ctrl-C
                sent = True
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
        out += read(fd, 0.5)  # what it wrote last
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert status is not None, f"still at the prompt after one Ctrl-C: {out!r}"
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 130, text
    assert no_traceback(text), text
    assert text.rstrip().endswith(
        "relaydesk: interrupted; if the erasure had begun, run the same command again to finish it (what is gone"
        " stays gone)"
    ), text


def read(fd: int, wait: float) -> bytes:
    """What the terminal shows within ``wait`` seconds of quiet."""
    got = b""
    while select.select([fd], [], [], wait)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child's side closed
            break
        if not chunk:
            break
        got += chunk
    return got
