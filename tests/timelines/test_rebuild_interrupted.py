"""``relaydesk rebuild timelines`` stopped by Ctrl-C or SIGTERM, and its progress off a terminal.

Found by an audit: Ctrl-C printed ~40 lines of CancelledError / KeyboardInterrupt traceback and
SIGTERM ended it (143) with nothing said; off a terminal (a Kubernetes Job, ``kubectl exec``
without -t) it showed no progress at all until its end. Now: one line saying what the
interruption left, exit 130 / 143, the writer process gone, the live copy as it was; a swap
once begun is finished first; and a plain progress line every ``PROGRESS_LINE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import pytest

from events.store import Append, EventStore
from services import rebuild
from services.bus.embedded import EmbeddedNats
from services.rebuild import rebuild_command, rebuild_timelines
from services.timelines import open_store
from tests.integration.system import eventually
from tests.interrupting import RELAYDESK, asleep_in_epoll, children, default_sigint, gone, no_traceback
from tests.timelines.test_rebuild import traffic

pytestmark = pytest.mark.integration

PROGRESS_LINE = re.compile(r"^rebuild timelines: [\d,]+ of [\d,]+ events \(\d+%\), [\d,]+ ev/s, [\d,]+s$", re.M)


def writer_of(pid: int) -> int | None:
    """The rebuild's writer process (``python -m services.timelines.bulk``) under ``pid``."""
    for child in children(pid):
        try:
            if b"services.timelines.bulk" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        except FileNotFoundError:
            continue
    return None


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_an_interrupted_rebuild_says_so_in_one_line_and_leaves_the_live_copy(
    own_store: EventStore, clean_nats: EmbeddedNats, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    events, _ = traffic(4)
    await own_store.append_many([Append(e) for e in events])
    target = str(tmp_path / "timelines.db")
    await rebuild_timelines(own_store, target, progress=False)
    more, _ = traffic(2)
    await own_store.append_many([Append(e) for e in more])  # a rebuild now would change rows
    live = await open_store(target, readonly=True)
    try:
        before = await live.dump()
    finally:
        await live.close()

    assert clean_nats.process is not None
    server = clean_nats.process.pid
    env = {**os.environ, "RELAYDESK_DATA_DIR": str(tmp_path / "data")}
    proc = await asyncio.create_subprocess_exec(
        RELAYDESK, "rebuild", "timelines", "--nats-url", clean_nats.url, "--target", target,
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=default_sigint,
    )  # fmt: skip
    writer: int | None = None
    try:

        async def writer_started() -> int | None:
            assert proc.returncode is None, await proc.communicate()
            return writer_of(proc.pid)

        async def idle() -> bool:
            return asleep_in_epoll(proc.pid)

        # Held mid-way, before any swap, for as long as the test needs: its writer process and
        # NATS stopped, nothing answers it (tests/interrupting.py says why NATS too).
        writer = await eventually(writer_started, timeout=60, every=0.01)
        os.kill(writer, signal.SIGSTOP)
        os.kill(server, signal.SIGSTOP)
        await eventually(idle, timeout=30, every=0.01)
        proc.send_signal(sig)

        async def writer_killed() -> bool:
            assert writer is not None
            return gone(writer)

        await eventually(writer_killed, timeout=30)  # the interruption reached the rebuild
        os.kill(server, signal.SIGCONT)  # for the connection's drain on the way out
        out, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        os.kill(server, signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if writer is not None and not gone(writer):
            os.kill(writer, signal.SIGKILL)
    err = err_bytes.decode()
    assert proc.returncode == code, err
    assert no_traceback(err), err
    said = [
        line
        for line in err.splitlines()
        if line.strip() and not PROGRESS_LINE.match(line) and '"event": "rebuild.progress"' not in line
    ]
    assert said == [
        "relaydesk: interrupted; nothing was swapped in, the live timelines are as they were; safe to run again"
    ], err
    assert out == b""
    live = await open_store(target, readonly=True)
    try:
        assert await live.dump() == before
    finally:
        await live.close()


async def test_a_swap_under_way_is_finished_before_the_interruption_is_honoured() -> None:
    """Cancelled while the swap (one transaction, which SQLite's thread commits regardless)
    runs, the rebuild waits for it and ends as it would have: never "nothing was swapped in"
    about a copy that was."""
    started, release = asyncio.Event(), asyncio.Event()

    async def swap() -> int:
        started.set()
        await release.wait()
        return 42

    async def rebuild_step() -> tuple[int, str]:
        checkpoint = await rebuild._let_finish(swap(), "the swap")
        await asyncio.sleep(0)  # not cancelled any more: the command goes on to its summary
        return checkpoint, "summary"

    task = asyncio.create_task(rebuild_step())
    await started.wait()
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()  # a second Ctrl-C too
    await asyncio.sleep(0.01)
    assert not task.done()
    release.set()
    assert await task == (42, "summary")
    assert task.cancelling() == 0


async def test_off_a_terminal_the_rebuild_prints_a_plain_progress_line(
    own_store: EventStore, clean_nats: EmbeddedNats, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    events, _ = traffic(4)
    await own_store.append_many([Append(e) for e in events])
    last = await own_store.last_seq()
    # Every 10 s in real use; the writer process's start alone outlasts this.
    monkeypatch.setattr("services.progress.PROGRESS_LINE_SECONDS", 0.01)
    monkeypatch.setenv("RELAYDESK_LOG_FORMAT", "console")  # plain text where the logs are
    capsys.readouterr()
    assert await rebuild_command(clean_nats.url, str(tmp_path / "t.db"), None) == 0
    err = capsys.readouterr().err
    lines = PROGRESS_LINE.findall(err)
    assert lines, err
    assert f" of {last:,} events (" in lines[0]
    assert "\x1b[" not in err  # no bar's escape codes


async def test_off_a_terminal_with_json_logs_the_progress_is_a_json_line(
    own_store: EventStore, clean_nats: EmbeddedNats, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """In a container (RELAYDESK_LOG_FORMAT=json, the image's default, and the default off a
    terminal) the progress was plain text among JSON log lines, which a log pipeline cannot
    parse; now each is a JSON object like the log's."""
    events, _ = traffic(4)
    await own_store.append_many([Append(e) for e in events])
    last = await own_store.last_seq()
    monkeypatch.setattr("services.progress.PROGRESS_LINE_SECONDS", 0.01)
    monkeypatch.setenv("RELAYDESK_LOG_FORMAT", "json")
    capsys.readouterr()
    assert await rebuild_command(clean_nats.url, str(tmp_path / "t.db"), None) == 0
    err = capsys.readouterr().err
    assert not PROGRESS_LINE.findall(err), err
    shown = [json.loads(line) for line in err.splitlines() if '"rebuild.progress"' in line]
    assert shown, err
    assert shown[0]["total"] == last and shown[0]["what"] == "rebuild timelines"
    assert all(0 <= p["events"] <= last and p["level"] == "info" for p in shown)
    assert err.splitlines()[-1].startswith("rebuilt all timelines: ")  # the answer stays a sentence
