"""The projector over a real nats-server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import nats
import pytest

from events.model import AgentStatusChanged, LogEvent
from events.store import Append, EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.projector import Projector
from services.timelines import TimelineStore, partition_of
from tests.timelines.helpers import T0, Backend, Script, new_id

pytestmark = pytest.mark.integration


async def append_all(store: EventStore, events: Sequence[LogEvent]) -> list[int]:
    return [await store.append(Append(ev)) for ev in events]


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not await predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_appended_events_reach_the_timeline(store: EventStore, backend: Backend) -> None:
    ts = await backend.open()
    s = Script(new_id("cu"), new_id("cv"))
    projector = Projector(store, ts, batch_size=50)
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        seqs = await append_all(store, [s.opened(), s.message("refund please"), s.assigned("ava")])

        async def arrived() -> bool:
            return len(await ts.timeline(s.customer)) == 3

        await wait_for(arrived)
        entries = await ts.timeline(s.customer)
        assert [e.seq for e in entries] == seqs
        assert entries[1].text == "refund please"
        conv = await ts.conversation(s.conversation)
        assert conv is not None and conv.status == "assigned" and conv.agent_id == "ava"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert await ts.checkpoint() >= seqs[-1]


async def test_stop_and_restart_loses_and_duplicates_nothing(store: EventStore, backend: Backend) -> None:
    ts = await backend.open()
    s = Script(new_id("cu"), new_id("cv"))
    await append_all(store, [s.opened()])
    expected = 1
    for round_ in range(3):
        projector = Projector(store, ts, batch_size=7, idle=0.01)
        stop = asyncio.Event()
        task = asyncio.create_task(projector.run(stop))
        # appends while it runs, then stop it mid-stream
        await append_all(store, [s.message(f"r{round_} m{i}") for i in range(15)])
        expected += 15
        await asyncio.sleep(0.01 * round_)
        stop.set()
        await asyncio.wait_for(task, 10)
        # more appends while it is down
        await append_all(store, [s.message(f"r{round_} down{i}") for i in range(5)])
        expected += 5
    projector = Projector(store, ts, batch_size=7)
    await projector.catch_up()
    entries = await ts.timeline(s.customer, limit=1000)
    assert len(entries) == expected
    assert len({e.seq for e in entries}) == expected
    conv = await ts.conversation(s.conversation)
    assert conv is not None and conv.message_count == expected - 1


async def test_a_killed_projector_resumes_exactly(store: EventStore, backend: Backend) -> None:
    """Cancel the task at arbitrary points (as a kill would): the store never shows half a batch."""
    ts = await backend.open()
    s = Script(new_id("cu"), new_id("cv"))
    await append_all(store, [s.opened(), *[s.message(f"m{i}") for i in range(60)]])
    for delay in (0.0, 0.005, 0.02):
        projector = Projector(store, ts, batch_size=5, idle=0.001)
        task = asyncio.create_task(projector.run(asyncio.Event()))
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n = len(await ts.timeline(s.customer, limit=1000))
        conv = await ts.conversation(s.conversation)
        assert conv is None or conv.message_count == n - 1
    await Projector(store, ts).catch_up()
    entries = await ts.timeline(s.customer, limit=1000)
    assert len(entries) == 61 and len({e.seq for e in entries}) == 61


async def test_catch_up_skips_agent_events_and_returns_the_checkpoint(store: EventStore, backend: Backend) -> None:
    ts = await backend.open()
    s = Script(new_id("cu"), new_id("cv"))
    seqs = await append_all(store, [s.opened(), s.message()])
    await store.append(Append(AgentStatusChanged(at=T0, agent_id=new_id("ag"), status="away")))
    cp = await Projector(store, ts).catch_up()
    assert cp >= seqs[-1]
    assert len(await ts.timeline(s.customer)) == 2


async def test_partitioned_projectors_share_the_work(store: EventStore, backend: Backend) -> None:
    ts = await backend.open()
    scripts = [Script(new_id("cu"), new_id("cv")) for _ in range(8)]
    for s in scripts:
        await append_all(store, [s.opened(), s.message()])
    parts = [Projector(store, ts, partition=(i, 2)) for i in range(2)]
    for p in parts:
        await p.catch_up()
    for s in scripts:
        assert len(await ts.timeline(s.customer)) == 2
    assert sum(p.applied for p in parts) >= 16
    counts = [sum(1 for s in scripts if partition_of(s.customer, 2) == i) for i in range(2)]
    assert sum(counts) == 8
    checkpoints = await ts.checkpoints()
    assert set(checkpoints) >= {"p0of2", "p1of2"}


async def live_timeline(ts: TimelineStore, customer: str) -> list[object]:
    return list(await ts.timeline(customer, limit=10_000))


async def test_a_projector_process_killed_mid_batch_loses_and_duplicates_nothing(
    clean_nats: EmbeddedNats, backend: Backend
) -> None:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    store = EventStore(nc, nc.jetstream())
    try:
        scripts = [Script(new_id("cu"), new_id("cv")) for _ in range(30)]
        events: list[LogEvent] = []
        for s in scripts:
            events += [s.opened(), *[s.message(f"m{i}") for i in range(60)], s.assigned("ava")]
        await store.append_many([Append(e) for e in events])
        end = await store.last_seq()
        ts = await backend.open()
        kills = 0
        for _ in range(3):
            args = [sys.executable, "-m", "tests.timelines.projector_process", clean_nats.url, backend.target]
            if backend.schema:
                args.append(backend.schema)
            proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
            assert proc.stdout is not None
            await asyncio.wait_for(proc.stdout.readline(), 20)
            start = await ts.checkpoint()
            while (cp := await ts.checkpoint()) < min(end, start + 300) and proc.returncode is None:
                await asyncio.sleep(0.002)
            proc.kill()  # SIGKILL: no cleanup, wherever it was
            await proc.wait()
            kills += cp < end
            # whatever committed is whole: each conversation's summary agrees with its timeline
            for s in scripts[:5]:
                conv = await ts.conversation(s.conversation)
                n_in = len([e for e in await ts.timeline(s.customer, limit=1000) if e.kind == "message_in"])
                assert conv is None or conv.message_count == n_in
        assert kills >= 1
        await Projector(store, ts).catch_up()
        rows = (await ts.dump())["timeline"]
        assert len(rows) == len(events)
        assert len({(r[0], r[1]) for r in rows}) == len(events)
        for s in scripts:
            conv = await ts.conversation(s.conversation)
            assert conv is not None and conv.message_count == 60 and conv.status == "assigned"
    finally:
        await nc.drain()


async def test_the_projector_resumes_after_a_nats_server_restart(clean_nats: EmbeddedNats, backend: Backend) -> None:
    nc = await nats.connect(clean_nats.url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    await ensure_streams(nc.jetstream())
    store = EventStore(nc, nc.jetstream())
    ts = await backend.open()
    s = Script(new_id("cu"), new_id("cv"))
    stop = asyncio.Event()
    task = asyncio.create_task(Projector(store, ts).run(stop))
    try:
        await append_all(store, [s.opened(), s.message("before")])

        async def count(n: int) -> bool:
            return len(await ts.timeline(s.customer)) == n

        await wait_for(lambda: count(2))
        await clean_nats.astop()
        await asyncio.sleep(0.3)
        await clean_nats.astart()
        for _ in range(100):
            try:
                await store.append(Append(s.message("after")))
                break
            except Exception:
                await asyncio.sleep(0.1)
        await wait_for(lambda: count(3), timeout=10)
        assert [e.text for e in await ts.timeline(s.customer)][1:] == ["before", "after"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await nc.close()


async def set_fold_version(ts: TimelineStore, value: int) -> None:
    """Pretend an older Relaydesk built these rows."""
    from services.timelines.postgres import PostgresTimelineStore
    from services.timelines.sqlite import SqliteTimelineStore

    if isinstance(ts, SqliteTimelineStore):
        await ts._run(ts._conn.execute, "UPDATE meta SET value = ? WHERE key = 'fold_version'", (str(value),))
    else:
        assert isinstance(ts, PostgresTimelineStore)
        conn = await ts._connection()
        await conn.execute(f'UPDATE "{ts.schema}".meta SET value = %s', (str(value),))


async def test_a_store_built_by_another_fold_version_is_rebuilt(store: EventStore, backend: Backend) -> None:
    ts = await backend.open()
    from services.timelines.fold import FOLD_VERSION

    assert await ts.fold_version() == FOLD_VERSION
    s = Script(new_id("cu"), new_id("cv"))
    await append_all(store, [s.opened(), s.message("kept")])
    await Projector(store, ts).catch_up()
    good = await ts.timeline(s.customer)
    await ts.replace_customer(s.customer, [], through=await ts.checkpoint())  # rows an old fold got wrong
    await set_fold_version(ts, FOLD_VERSION - 1)
    projector = Projector(store, ts)
    assert await projector.rebuild_if_stale()
    assert await ts.fold_version() == FOLD_VERSION
    assert await ts.timeline(s.customer) == good
    assert not await projector.rebuild_if_stale()


@pytest.mark.parametrize("restored", ["shorter than the store", "grown past the store since"])
async def test_a_store_of_a_log_restored_from_an_older_backup_is_rebuilt(
    clean_nats: EmbeddedNats, backend: Backend, tmp_path: Path, restored: str
) -> None:
    # An operator audit restored NATS from a backup: the projector resumed from its checkpoint,
    # skipped the new events up to it, kept rows of events no longer on the log, and said it
    # was caught up.
    ts = await backend.open()
    before = EmbeddedNats(store_dir=tmp_path / "before" / "js")
    before.start()
    try:
        nc = await nats.connect(before.url)
        await ensure_streams(nc.jetstream())
        gone = [Script(new_id("cu"), new_id("cv")) for _ in range(3)]
        await append_all(EventStore(nc, nc.jetstream()), [e for s in gone for e in (s.opened(), s.message("x"))])
        await Projector(EventStore(nc, nc.jetstream()), ts).catch_up()
        await nc.drain()
    finally:
        before.stop()
    assert await ts.checkpoint() == 6

    nc = await nats.connect(clean_nats.url)  # the log as restored, and what came after
    await ensure_streams(nc.jetstream())
    store = EventStore(nc, nc.jetstream())
    try:
        fresh = [Script(new_id("cu"), new_id("cv")) for _ in range(1 if restored.startswith("shorter") else 4)]
        await append_all(store, [e for s in fresh for e in (s.opened(), s.message("y"))])
        projector = Projector(store, ts)
        assert await projector.rebuild_if_stale()
        for s in fresh:
            assert [e.seq for e in await ts.timeline(s.customer)], "an event of the restored log is missing"
        for s in gone:
            assert await ts.timeline(s.customer) == [], "rows of events no longer on the log stayed"
        assert await ts.checkpoint() == await store.last_seq()
        assert not await projector.rebuild_if_stale()
    finally:
        await nc.drain()


OLD_CONVERSATIONS = """CREATE TABLE conversations (
    conversation_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, channel TEXT, status TEXT NOT NULL,
    agent_id TEXT, opened_at TEXT, last_activity_at TEXT NOT NULL, resolved_at TEXT,
    transfer_count INTEGER NOT NULL, message_count INTEGER NOT NULL, last_reason TEXT, last_seq INTEGER NOT NULL)"""


async def test_an_older_sqlite_file_is_migrated_and_refilled(store: EventStore, tmp_path: Path) -> None:
    """A file from an earlier release: the missing columns are added at open, and the
    projector refills everything from the log because the fold version moved on."""
    import sqlite3

    from services.timelines import open_store
    from services.timelines.fold import FOLD_VERSION

    path = tmp_path / "timelines.db"
    with sqlite3.connect(path) as db:
        db.execute(OLD_CONVERSATIONS)
        db.execute("CREATE TABLE timeline (customer_id TEXT, seq INTEGER, PRIMARY KEY (customer_id, seq))")
    s = Script(new_id("cu"), new_id("cv"))
    await append_all(store, [s.opened(), s.message(), s.routing(), s.assigned("ava"), s.reply("ava")])
    ts = await open_store(str(path))
    try:
        assert await ts.fold_version() is None  # rows of unknown provenance
        projector = Projector(store, ts)
        assert await projector.rebuild_if_stale()
        assert await ts.fold_version() == FOLD_VERSION
        conv = await ts.conversation(s.conversation)
        assert conv is not None and conv.priority == 2 and conv.first_response_at is not None
        assert len(await ts.timeline(s.customer)) == 5
    finally:
        await ts.close()


async def test_partitioned_projectors_running_side_by_side(store: EventStore, backend: Backend) -> None:
    stores = [await backend.open(), await backend.open()]  # one connection each, as two processes would
    scripts = [Script(new_id("cu"), new_id("cv")) for _ in range(10)]
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(Projector(store, stores[i], partition=(i, 2), batch_size=8, idle=0.005).run(stop))
        for i in range(2)
    ]
    try:
        for round_ in range(5):
            await store.append_many([Append(s.message(f"m{round_}")) for s in scripts])
        end = await store.last_seq()

        async def done() -> bool:
            cps = await stores[0].checkpoints()
            return all(cps.get(k, 0) >= end for k in ("p0of2", "p1of2"))

        await wait_for(done, 20)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    for s in scripts:
        entries = await stores[0].timeline(s.customer, limit=100)
        assert [e.text for e in entries] == [f"m{i}" for i in range(5)]
        conv = await stores[1].conversation(s.conversation)
        assert conv is not None and conv.message_count == 5


class RebuildingForever(Projector):
    """A rebuild at start that would take longer than the process is given to stop."""

    started = asyncio.Event()
    given_up = False

    async def rebuild_if_stale(self) -> bool:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.given_up = True
            raise
        return True


async def test_a_stop_during_the_rebuild_at_start_gives_it_up_at_once(store: EventStore, backend: Backend) -> None:
    # An operator audit: SIGTERM during the rebuild an upgrade starts was ignored until the
    # rebuild ended (minutes on a long log); Kubernetes then SIGKILLs after its grace period.
    projector = RebuildingForever(store, await backend.open())
    projector.started = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    await asyncio.wait_for(projector.started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert projector.given_up


# The FOLD_VERSION of the last landed release (9a243af): its stores have no erasure register.
RELEASED_FOLD_VERSION = 8


async def test_an_upgraded_store_registers_the_erasures_it_folded_before(store: EventStore, backend: Backend) -> None:
    """A store the previous release built (no ``erasures`` table, so no rows in the one an
    upgrade creates) from a log holding a ``CustomerErased``: the upgraded projector refolds it
    and the register holds that erasure. Kept at the old version the register stayed empty, so
    a restore of NATS from a backup older than that erasure brought the customer back unreported
    (``projector.erasure_undone`` never said it, ``customers erase-again`` found nothing)."""
    from events.model import CustomerErased
    from services.timelines.fold import FOLD_VERSION

    s = Script(new_id("cu"), new_id("cv"))
    erased = CustomerErased(at=T0, customer_id=s.customer, reason="DSR-7", actor="cli")
    [*_, erased_seq] = await append_all(store, [s.created(), s.opened(), s.message("mine"), erased])
    ts = await backend.open()
    await Projector(store, ts).catch_up()
    # As the release left it: every event folded, the register (created empty at open) empty.
    await _clear_register(ts)
    await set_fold_version(ts, RELEASED_FOLD_VERSION)
    assert await Projector(store, ts).rebuild_if_stale()
    assert await ts.fold_version() == FOLD_VERSION
    [record] = [r for r in await ts.erasures() if r.customer_id == s.customer]
    assert (record.seq, record.reason) == (erased_seq, "DSR-7")


async def _clear_register(ts: TimelineStore) -> None:
    from services.timelines.postgres import PostgresTimelineStore
    from services.timelines.sqlite import SqliteTimelineStore

    if isinstance(ts, SqliteTimelineStore):
        await ts._run(ts._conn.execute, "DELETE FROM erasures")
    else:
        assert isinstance(ts, PostgresTimelineStore)
        conn = await ts._connection()
        await conn.execute(f'DELETE FROM "{ts.schema}".erasures')
