"""``relaydesk customers import`` stopped by Ctrl-C or SIGTERM mid-file: one line saying what
was left (found by an audit: ~40 lines of CancelledError / KeyboardInterrupt traceback, and
SIGTERM ended it with nothing said), exit 130 / 143; running it again imports the rest."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from tests.integration.system import eventually
from tests.interrupting import RELAYDESK, asleep_in_epoll, default_sigint, handled, no_traceback

pytestmark = pytest.mark.integration

LINES = 3_000  # far more than are imported before the signal: it lands mid-file


@pytest.fixture
async def server_nc(clean_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    try:
        yield nc
    finally:
        await nc.drain()


async def events_on_log(nc: NATS) -> int:
    return int((await nc.jetstream().stream_info(subjects.EVENTS_STREAM)).state.messages)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_an_interrupted_import_says_what_it_left_in_one_line(
    server_nc: NATS, clean_nats: EmbeddedNats, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("identity,tier\n" + "".join(f"sms:+1555{n:07d},gold\n" for n in range(LINES)))
    assert clean_nats.process is not None
    server = clean_nats.process.pid
    env = {**os.environ, "RELAYDESK_DATA_DIR": str(tmp_path / "data")}
    proc = await asyncio.create_subprocess_exec(
        RELAYDESK, "customers", "import", str(path), "--nats-url", clean_nats.url,
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )  # fmt: skip
    try:

        async def importing() -> bool:
            assert proc.returncode is None, await proc.communicate()
            return await events_on_log(server_nc) >= 30

        async def idle() -> bool:
            return asleep_in_epoll(proc.pid)

        async def cancelled() -> bool:
            return handled(proc.pid)

        await eventually(importing, timeout=60)
        # Held: NATS stopped, nothing answers the import (tests/interrupting.py says why).
        os.kill(server, signal.SIGSTOP)
        await eventually(idle, timeout=30, every=0.01)
        proc.send_signal(sig)
        await eventually(cancelled, timeout=30, every=0.01)
        os.kill(server, signal.SIGCONT)
        out, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        os.kill(server, signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = err_bytes.decode()
    assert proc.returncode == code, err
    assert no_traceback(err), err
    assert [line for line in err.splitlines() if line.strip()] == [
        "relaydesk: interrupted; the lines imported so far stay; run it again for the rest (lines already in change"
        " nothing)"
    ], err
    assert out == b""
    assert await events_on_log(server_nc) < 3 * LINES  # stopped mid-file (a customer: three events)
