"""The in-memory projection's catch-up (a fake log) and the API's answer while it folds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from events import subjects
from events.store import Append, EventStore, StoredEvent
from events.streams import ensure_streams
from services.api import reports as reports_api
from services.api.common import ApiDeps
from services.bus.embedded import EmbeddedNats
from services.reports import ReportProjection
from tests.reports.scenario import scenario


class FakeLog:
    """Just what ReportProjection reads: ``last_seq`` and ``replay``; ``gate`` holds replays."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.replays = 0

    def add(self, n: int, offset: int = 0) -> None:
        for event in scenario(prefix=f"x{offset}-")[:n]:
            self.events.append(StoredEvent(seq=len(self.events) + 1, subject=subjects.for_event(event), event=event))

    async def last_seq(self) -> int:
        return len(self.events)

    async def replay(self, filter_subject: str, from_seq: int, batch: int = 1000) -> AsyncIterator[list[StoredEvent]]:
        self.replays += 1
        end = len(self.events)
        await self.gate.wait()
        chunk = [e for e in self.events if from_seq <= e.seq <= end]
        if chunk:
            yield chunk


async def test_a_catch_up_joins_the_running_one_and_folds_what_it_missed() -> None:
    log = FakeLog()
    log.add(10)
    projection = ReportProjection(log, read_snapshot=False, snapshot_every=0)  # type: ignore[arg-type]
    log.gate.clear()
    first = projection.start()
    await asyncio.sleep(0.01)
    log.add(20, offset=1)  # arrives while the first catch-up is folding
    second = asyncio.create_task(projection.catch_up())
    await asyncio.sleep(0.01)
    log.gate.set()
    assert await first == 10
    assert await second == 30
    assert projection.through == 30
    replays = log.replays
    assert await projection.catch_up() == 30 and log.replays == replays  # nothing new: no replay


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient[Any, Any], FakeLog]]:
    monkeypatch.setattr(reports_api, "WAIT_SECONDS", 0.2)
    log = FakeLog()
    log.add(35)
    log.gate.clear()
    deps = ApiDeps(nc=None, store=log, live=None, timelines=None, directory=None, token="t")  # type: ignore[arg-type]
    app = web.Application()
    app.add_routes(reports_api.routes(deps))
    async with TestClient(TestServer(app)) as c:
        yield c, log


async def test_the_api_says_how_far_the_fold_is_instead_of_holding_the_request(
    client: tuple[TestClient[Any, Any], FakeLog],
) -> None:
    c, log = client
    r = await c.get("/v1/reports/service", params={"from": "2026-11-23", "to": "2026-11-23"})
    assert r.status == 503
    assert r.headers["Retry-After"] == "5"
    body = await r.json()
    assert "still folding the event log (at 0 of 35)" in body["error"]
    log.gate.set()
    r = await c.get("/v1/reports/service", params={"from": "2026-11-23", "to": "2026-11-23"})
    assert r.status == 200
    assert (await r.json())["total"]["conversations"] == 4


def test_snapshots_round_trip_and_refuse_other_versions() -> None:
    import msgspec

    from services.reports import fold_all
    from services.reports.projection import ReportSnapshot, dump_snapshot, load_snapshot

    log = FakeLog()
    log.add(35)
    state = fold_all(log.events)
    snap = load_snapshot(dump_snapshot(state, 40))
    assert snap is not None and snap.through == 40 and snap.state == state
    assert load_snapshot(b"not a snapshot") is None
    other = msgspec.msgpack.encode(ReportSnapshot(version=999, through=1, state=state))
    import zlib

    assert load_snapshot(zlib.compress(other)) is None


async def test_a_catch_up_cancelled_after_its_connection_closed_stops_as_cancelled(clean_nats: EmbeddedNats) -> None:
    # `relaydesk up` failing part-way: the API's catch-up is still reading when the buses close,
    # then asyncio.run cancels it. The replay's clean-up (an unsubscribe on the closed connection)
    # raised ConnectionClosedError over the cancel: "unhandled exception during asyncio.run() shutdown".
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    store = EventStore(nc, nc.jetstream())
    for event in scenario()[:5]:
        await store.append(Append(event))
    reading = asyncio.Event()

    async def held(chunk: list[StoredEvent]) -> list[StoredEvent]:
        reading.set()
        await asyncio.Event().wait()  # inside the replay until cancelled
        return chunk

    store.opened_all = held  # type: ignore[method-assign]
    projection = ReportProjection(store, batch=1, read_snapshot=False, snapshot_every=0)
    task = projection.start()
    await asyncio.wait_for(reading.wait(), 20)
    await nc.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    assert task.cancelled()  # not ConnectionClosedError: asyncio.run's shutdown has nothing to say
