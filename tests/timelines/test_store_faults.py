"""The timelines database misbehaving under a running projector (the projection-database audit):
a fault of the store's own (a full disk, a read-only file, a lock another session holds, a
connection killed) is raised as ``StoreUnavailable``: the projector backs off and resumes from
its checkpoint, quarantining nothing, and every event lands once when the store is back; a
reader gets ``StoreUnavailable`` (the API's 503) and then answers again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from events.model import LogEvent
from events.store import Append, EventStore, StoredEvent
from services.projector import Projector
from services.timelines import StoreUnavailable, TimelineStore, open_store
from services.timelines import postgres as pgstore
from services.timelines.sqlite import SqliteTimelineStore
from tests.integration.system import eventually
from tests.timelines.helpers import Backend, Script, make_backend, new_id

pytestmark = pytest.mark.integration


class Recording(Projector):
    """A projector that keeps what it would quarantine (instead of parking it on NATS)."""

    quarantined: list[int]

    async def _quarantine(self, stored: StoredEvent, error: str) -> None:
        self.quarantined.append(stored.seq)


def record_faults(ts: TimelineStore) -> list[BaseException]:
    """Every error ``ts.apply`` raises, kept in the list returned."""
    seen: list[BaseException] = []
    apply = ts.apply

    async def recorded(*args: Any, **kwargs: Any) -> None:
        try:
            await apply(*args, **kwargs)
        except Exception as err:
            seen.append(err)
            raise

    ts.apply = recorded  # type: ignore[method-assign]
    return seen


# A fault's effect on a loaded 2-core machine: the projector's retry, a reopened file.
SETTLE_S = 20.0


@contextlib.asynccontextmanager
async def running(projector: Projector) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def appended(store: EventStore, s: Script, n: int, tag: str) -> list[int]:
    return [await store.append(Append(s.message(f"{tag} {i} " + "x" * 3000))) for i in range(n)]


async def assert_all_once(ts: TimelineStore, s: Script, seqs: list[int]) -> None:
    async def arrived() -> bool:
        return await ts.checkpoint() >= seqs[-1]

    await eventually(arrived, timeout=SETTLE_S)
    got = [e.seq for e in await ts.timeline(s.customer, limit=1000)]
    assert got == sorted(set(got)) and set(seqs) <= set(got)
    conv = await ts.conversation(s.conversation)
    assert conv is not None and conv.message_count == len(got) - 1  # the opening is no message


# -- SQLite: a full disk, a read-only file ----------------------------------------------------

# What the writer's connection is told to make SQLite refuse every write the way the machine
# would: no page beyond those it has (SQLITE_FULL, as a full disk), or no write at all
# (SQLITE_READONLY, as a file or a mount made read-only). Root ignores file modes, so chmod
# could not stand in for the latter here.
FAULTS = {
    "disk full": ("PRAGMA max_page_count = {pages}", "PRAGMA max_page_count = 1073741823", "full"),
    "read-only": ("PRAGMA query_only = ON", "PRAGMA query_only = OFF", "readonly"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_full_or_read_only_sqlite_file_quarantines_nothing(
    store: EventStore, tmp_path: Path, fault: str
) -> None:
    ts = await open_store(str(tmp_path / "timelines.db"))
    assert isinstance(ts, SqliteTimelineStore)
    try:
        s = Script(new_id("cu"), new_id("cv"))
        seqs = [await store.append(Append(s.opened()))]
        projector = Recording(store, ts, batch_size=10, idle=0.01, max_backoff=0.2, rebuild_if_stale=False)
        projector.quarantined = []
        faults = record_faults(ts)
        async with running(projector):

            async def opened() -> bool:
                return await ts.checkpoint() >= seqs[0]

            await eventually(opened, timeout=SETTLE_S)
            on, off, said = FAULTS[fault]
            pages = (await ts._run(lambda: ts._conn.execute("PRAGMA page_count").fetchone()))[0]
            await ts._run(ts._conn.execute, on.format(pages=pages))
            seqs += await appended(store, s, 30, "while refused")

            async def refused_often() -> bool:
                return len(faults) >= 5

            await eventually(refused_often, timeout=SETTLE_S)
            assert projector.quarantined == []
            assert all(isinstance(f, StoreUnavailable) and said in str(f) for f in faults), faults
            await ts._run(ts._conn.execute, off)
            await assert_all_once(ts, s, seqs)
        assert projector.quarantined == []
    finally:
        await ts.close()


async def test_sqlites_own_rollback_does_not_hide_why(tmp_path: Path) -> None:
    """SQLite rolls a transaction back itself on a full disk; our ROLLBACK then failed with
    "cannot rollback - no transaction is active", which was all the log said."""
    ts = await open_store(str(tmp_path / "timelines.db"))
    assert isinstance(ts, SqliteTimelineStore)
    try:
        s = Script(new_id("cu"), new_id("cv"))
        pages = (await ts._run(lambda: ts._conn.execute("PRAGMA page_count").fetchone()))[0]
        await ts._run(ts._conn.execute, f"PRAGMA max_page_count = {pages}")
        written: list[LogEvent] = [s.opened(), *(s.message("y" * 5000) for _ in range(20))]
        events = [
            StoredEvent(seq=i + 1, subject=f"rd.evt.c.{s.customer}.{s.conversation}", event=e)
            for i, e in enumerate(written)
        ]
        with pytest.raises(StoreUnavailable, match="database or disk is full"):
            await ts.apply(events)
        assert not ts._conn.in_transaction
    finally:
        await ts.close()


def remove(directory: Path, pattern: str) -> None:
    for item in directory.glob(pattern):
        item.unlink()


async def test_a_sqlite_file_deleted_under_the_projector_is_said_not_written_into(
    store: EventStore, tmp_path: Path
) -> None:
    """``rm timelines.db*`` under a running projector and API: the projector went on writing
    into the unlinked file and said it was caught up, an API (re)opening the path read an empty
    store, and the running API answered "disk I/O error" until restarted."""
    path = tmp_path / "timelines.db"
    ts = await open_store(str(path))
    api = await open_store(str(path), readonly=True)
    s = Script(new_id("cu"), new_id("cv"))
    seqs = [await store.append(Append(s.opened()))]
    projector = Recording(store, ts, batch_size=10, idle=0.01, max_backoff=0.2, rebuild_if_stale=False)
    projector.quarantined = []
    faults = record_faults(ts)
    try:
        async with running(projector):

            async def opened() -> bool:
                return projector.position >= seqs[0] and len(await api.timeline(s.customer)) == 1

            await eventually(opened, timeout=SETTLE_S)
            remove(tmp_path, "timelines.db*")
            seqs += await appended(store, s, 5, "after the rm")

            async def said() -> bool:
                return len(faults) >= 3

            await eventually(said, timeout=SETTLE_S)
            assert all(isinstance(f, StoreUnavailable) and "deleted or replaced" in str(f) for f in faults), faults
            assert projector.position == seqs[0] and projector.quarantined == []
            with pytest.raises(StoreUnavailable, match="was deleted"):
                await api.timeline(s.customer)
        # Restarted, it folds the log into the file it finds (a new one); the running API
        # reads that one.
        await ts.close()
        ts = await open_store(str(path))
        await Projector(store, ts, rebuild_if_stale=False).catch_up()
        await assert_all_once(api, s, seqs)
        assert [c.customer_id for c in await api.customers(q=s.customer)] == [s.customer]  # its search too
    finally:
        await ts.close()
        await api.close()


# -- PostgreSQL: a lock held, connections killed, a server that never answers -----------------


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = make_backend("postgres", tmp_path)  # a schema of its own; skips without PostgreSQL
    try:
        yield backend
    finally:
        await backend.close_all()


async def test_a_lock_held_by_another_session_is_said_and_waited_out(
    store: EventStore, pg: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's ``LOCK TABLE`` on the timeline: the projector waited on it without a word
    for as long as it was held (and the API's reads with it, behind an ACCESS EXCLUSIVE lock)."""
    monkeypatch.setattr(pgstore, "WRITE_LOCK_TIMEOUT_S", 0.3)
    monkeypatch.setattr(pgstore, "READ_LOCK_TIMEOUT_S", 0.3)
    ts = await pg.open()
    reader = await pg.open(readonly=True)
    s = Script(new_id("cu"), new_id("cv"))
    seqs = [await store.append(Append(s.opened()))]
    projector = Recording(store, ts, batch_size=10, idle=0.01, max_backoff=0.2, rebuild_if_stale=False)
    projector.quarantined = []
    faults = record_faults(ts)
    async with running(projector):

        async def opened() -> bool:
            return await ts.checkpoint() >= seqs[0]

        await eventually(opened, timeout=SETTLE_S)
        async with await psycopg.AsyncConnection.connect(pg.target, application_name="operator-psql") as operator:
            await operator.execute(f'LOCK TABLE "{pg.schema}".timeline IN ACCESS EXCLUSIVE MODE')
            seqs += await appended(store, s, 5, "while locked")

            async def said() -> bool:
                return len(faults) >= 6  # past the tries one event at a time that end in quarantine

            await eventually(said, timeout=SETTLE_S)
            assert projector.quarantined == []
            for f in faults:
                assert isinstance(f, StoreUnavailable) and "LockNotAvailable" in str(f), f
            assert any("held by pid" in str(f) and "operator-psql" in str(f) for f in faults), faults
            with pytest.raises(StoreUnavailable, match="lock timeout"):
                await reader.timeline(s.customer)
            await operator.rollback()
        await assert_all_once(ts, s, seqs)
        assert len(await reader.timeline(s.customer, limit=1000)) == len(seqs)
    assert projector.quarantined == []


def terminate(dsn: str, *stores: TimelineStore) -> None:
    """``pg_terminate_backend`` on the stores' connections (only theirs: other tests share the
    server)."""
    pids = [store._conn.info.backend_pid for store in stores if isinstance(store, pgstore.PostgresTimelineStore)]
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))


async def test_killed_connections_lose_nothing_and_readers_come_back(store: EventStore, pg: Backend) -> None:
    """``pg_terminate_backend`` on every backend of the store (a failover, a restart, an
    operator) while the projector folds: no event lost, none applied twice, none quarantined,
    and a reader answers again after its ``StoreUnavailable``."""
    ts = await pg.open()
    reader = await pg.open(readonly=True)
    s = Script(new_id("cu"), new_id("cv"))
    seqs = [await store.append(Append(s.opened()))]
    projector = Recording(store, ts, batch_size=5, idle=0.005, max_backoff=0.2, rebuild_if_stale=False)
    projector.quarantined = []
    faults = record_faults(ts)
    reader_faults = 0
    async with running(projector):

        async def opened() -> bool:
            return await ts.checkpoint() >= seqs[0]

        await eventually(opened, timeout=SETTLE_S)
        for round_ in range(6):
            seqs += [await store.append(Append(s.message(f"m{round_} {i}"))) for i in range(20)]
            terminate(pg.target, ts, reader)
            try:
                await reader.timeline(s.customer, limit=1000)
            except StoreUnavailable:
                reader_faults += 1
        await assert_all_once(ts, s, seqs)
    assert projector.quarantined == []
    assert reader_faults >= 1  # the killed reader's next read said so, as a StoreUnavailable
    assert all(isinstance(f, StoreUnavailable) for f in faults), faults
    assert len(await reader.timeline(s.customer, limit=1000)) == len(seqs)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a server hung, a proxy with
    nothing behind it)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_a_server_that_never_answers_fails_the_open_in_time(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq waits for ever without ``connect_timeout``: the projector's and the API's start hung
    without a line (the README says they stop with the reason)."""
    monkeypatch.setattr(pgstore, "CONNECT_TIMEOUT_S", 1)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    # Without the bound, wait_for's TimeoutError, not libpq's, ends it.
    with pytest.raises(psycopg.OperationalError, match="timeout"):
        await asyncio.wait_for(open_store(f"postgresql://nobody@127.0.0.1:{silent_server}/x"), 30)
    # A DSN's own connect_timeout is kept.
    assert "connect_timeout" not in pgstore.connect_options("postgresql://h/x?connect_timeout=3")


async def test_a_connection_to_a_peer_gone_silent_is_given_up_within_a_minute(pg: Backend) -> None:
    """A partition or a host powered off (no reset) left the projector and the API's reads waiting
    ~15 minutes on the kernel's retransmissions; the store's connections carry keepalives and a
    TCP user timeout (the DSN's own values win). No partition can be made here: the test reads
    what libpq was given on a real connection."""
    store = await pg.open()
    assert isinstance(store, pgstore.PostgresTimelineStore)
    given = (await store._connection()).info.get_parameters()
    assert given.get("keepalives_idle") == "30", given
    assert given.get("tcp_user_timeout") == "60000", given
    options = pgstore.connect_options("postgresql://h/x?keepalives_idle=5&tcp_user_timeout=0")
    assert "keepalives_idle" not in options and "tcp_user_timeout" not in options
    assert options["keepalives_count"] == 3


async def test_the_api_answers_a_503_to_retry_and_then_the_timeline(pg: Backend) -> None:
    """A read of the timelines after the database dropped the API's connection (a restart, a
    failover) was a 500 with an incident id and a traceback in the log; it is a JSON 503 saying
    to retry, and the retry is answered."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from services.api.errors import TIMELINES_AWAY, json_errors

    writer = await pg.open()
    reader = await pg.open(readonly=True)
    s = Script(new_id("cu"), new_id("cv"))
    await writer.apply([StoredEvent(seq=1, subject=f"rd.evt.c.{s.customer}.{s.conversation}", event=s.opened())])

    async def timeline(_request: web.Request) -> web.Response:
        return web.json_response({"entries": len(await reader.timeline(s.customer))})

    app = web.Application(middlewares=[json_errors(1024)])
    app.router.add_get("/timeline", timeline)
    async with TestClient(TestServer(app)) as client:
        assert (await (await client.get("/timeline")).json()) == {"entries": 1}
        terminate(pg.target, reader)
        response = await client.get("/timeline")
        assert response.status == 503 and response.headers["Retry-After"] == "2"
        assert await response.json() == {"error": TIMELINES_AWAY}
        assert (await (await client.get("/timeline")).json()) == {"entries": 1}


@pytest.mark.parametrize("readonly", [False, True], ids=["projector", "API"])
async def test_opening_under_a_lock_held_fails_naming_its_holder(
    pg: Backend, readonly: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening lays down the indexes (``CREATE INDEX IF NOT EXISTS`` waits for an operator's
    ``LOCK TABLE``): the projector's and the API's start hung without a line for as long as it
    was held; it fails with who holds it (the README: what a service cannot open stops it)."""
    from services.timelines import postgres_schema

    await pg.open()  # the schema there
    monkeypatch.setattr(postgres_schema, "OPEN_LOCK_TIMEOUT_S", 0.3)
    async with await psycopg.AsyncConnection.connect(pg.target, application_name="operator-psql") as operator:
        await operator.execute(f'LOCK TABLE "{pg.schema}".timeline')
        with pytest.raises(StoreUnavailable, match=r"lock timeout; held by pid \d+ \(\w+, operator-psql\)"):
            await asyncio.wait_for(pg.open(readonly=readonly), 30)
        await operator.rollback()
    assert (await pg.open(readonly=readonly)) is not None


async def test_a_keyword_dsn_opens_postgresql(pg: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq's keyword/value form of the same DSN became an SQLite file named after it."""
    monkeypatch.chdir(tmp_path)
    parts = psycopg.conninfo.conninfo_to_dict(pg.target)
    keywords = " ".join(f"{key}={value}" for key, value in parts.items() if value)
    store = await open_store(keywords, schema=pg.schema)
    try:
        assert isinstance(store, pgstore.PostgresTimelineStore)
    finally:
        await store.close()
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # no SQLite file named after it
