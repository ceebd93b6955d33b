"""NATS restored from an older backup while the projector runs (a NATS cluster restored under
running services, as on Kubernetes): the projector's client reconnects, and the store is
checked against the log again, as at start. An operator audit saw the projector follow the
restored log from its own checkpoint, past the restored log's end: every new event up to that
sequence was skipped, rows of events no longer on the log stayed, and it said it was caught up."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest

from events.model import LogEvent
from events.store import Append, EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.bus.errors import NATS_ERRORS
from services.projector import Projector
from services.timelines import TimelineStore
from tests.timelines.helpers import Script, make_backend, new_id

pytestmark = pytest.mark.integration


@pytest.fixture
async def timelines(tmp_path: Path) -> AsyncIterator[TimelineStore]:
    backend = make_backend("sqlite", tmp_path)
    try:
        yield await backend.open()
    finally:
        await backend.close_all()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    async def poll() -> None:
        while not await check():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def append(store: EventStore, events: list[LogEvent]) -> None:
    """Appended once NATS answers again (the client reconnects after a restart)."""

    async def appended() -> bool:
        try:
            await store.append_many([Append(e) for e in events])
        except NATS_ERRORS:  # not reconnected yet, or the stream not loaded yet
            return False
        return True

    await until(appended, "NATS takes appends again")


def conversations(n: int) -> list[Script]:
    return [Script(new_id("cu"), new_id("cv")) for _ in range(n)]


def events_of(scripts: list[Script]) -> list[LogEvent]:
    return [e for s in scripts for e in (s.opened(), s.message("hello"))]


async def test_a_log_restored_under_a_running_projector_is_folded_again(
    tmp_path: Path, timelines: TimelineStore
) -> None:
    live, backup = tmp_path / "nats" / "js", tmp_path / "backup" / "js"
    server = EmbeddedNats(store_dir=live)
    server.start()
    nc = await nats.connect(server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    try:
        await ensure_streams(nc.jetstream())
        store = EventStore(nc, nc.jetstream())
        projector = Projector(store, timelines, idle=0.005)
        stop = asyncio.Event()
        running = asyncio.create_task(projector.run(stop))
        try:
            kept = conversations(2)
            await append(store, events_of(kept))
            await until(lambda: at(timelines, 4), "the projector applied the first events")

            server.stop()  # the backup: a file-level copy of the stopped server's store
            shutil.copytree(live, backup)
            server.start()  # (its reconnect is checked too, and finds the same log)
            gone = conversations(3)
            await append(store, events_of(gone))
            await until(lambda: at(timelines, 10), "the projector applied the events after the backup")
            assert [e.seq for e in await timelines.timeline(gone[0].customer)]

            server.stop()  # restored from the backup under the running projector
            shutil.rmtree(live)
            shutil.copytree(backup, live)
            server.start()
            fresh = conversations(2)
            await append(store, events_of(fresh))  # sequences 5 to 8 of the restored log

            async def refolded() -> bool:
                return all([await timelines.timeline(s.customer) for s in fresh]) and await at(
                    timelines, await store.last_seq()
                )

            await until(refolded, "the restored log's new events reach the timelines")
            for s in gone:
                assert await timelines.timeline(s.customer) == [], "rows of events no longer on the log stayed"
            for s in kept:
                assert [e.seq for e in await timelines.timeline(s.customer)]
        finally:
            stop.set()
            await asyncio.wait_for(running, 20)
    finally:
        await nc.close()
        server.stop()


async def at(timelines: TimelineStore, seq: int) -> bool:
    return await timelines.checkpoint() == seq
