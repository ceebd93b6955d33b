"""SQLite timeline store: one file under the data dir, WAL mode.

The projector is the one writer; API processes open the same file read-only and read
concurrently (WAL readers never block the writer nor each other). The sqlite3 module is
blocking, so every call runs on one dedicated thread per store (``run_in_executor`` with a
single-worker pool), which also serialises use of the connection.

Rebuild and swap: a rebuild writes a fresh copy into shadow tables (``timeline__next`` ...) in
the same file, then ``swap_in`` drops the live tables and renames the shadow ones in ONE
transaction. Readers keep serving the old rows until that commit and see the new ones on their
next query, without reopening anything (SQLite re-prepares statements after a schema change).
This is deliberately not "build timelines.db.rebuild, then os.replace": renaming a WAL-mode
database under open connections pairs the new file with the old ``-wal``/``-shm`` files, which
is one of SQLite's documented ways to corrupt a database.

The tables and indexes, and laying down what an older file lacks, are ``sqlite_schema.py``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec
import structlog

from services.timelines.base import PlannedStore
from services.timelines.codec import dump_json, iso, load_json, parse_iso
from services.timelines.queries import SHADOW, TABLES, Sql
from services.timelines.rowmap import RowCodec, iso_many, text_entry_rows
from services.timelines.rows import TimelineEntry
from services.timelines.search import SqliteSql, count_customers, drop_index, ensure_index, fts_available
from services.timelines.sqlite_schema import create_indexes, drop_indexes, ensure_schema
from services.timelines.steps import Execute, Fetch, Plan, Rows, Step, each, run, send
from services.timelines.store import StoreUnavailable, TimelineStore

T = TypeVar("T")
log = structlog.get_logger(__name__)

BUSY_TIMEOUT_S = 60.0
WRITER_CACHE_KIB = 65_536
BULK_CHECKPOINT_PAGES = 10_000  # the WAL a rebuild's writer lets grow between checkpoints (~40 MiB)

# sqlite3 binds str, int, float and bytearray as they are and passes every other value (None
# included) through its adapter lookup first: with no adapter for None it then looks for
# ``__adapt__``/``__conform__`` and clears the AttributeError each raised, ~1,200 instructions a
# NULL. A timeline row binds five or six NULLs; a rebuild binds one row an event (callgrind on
# the rebuild's writer: 4.8% of its instructions). An adapter for None that gives None back
# (a dict's ``get``, a C call) ends the lookup at once; NULL is bound as before. Process-wide,
# and the same NULL for every connection.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))


class SqliteRows(RowCodec):
    """Timestamps as ISO-8601 UTC text, JSON as text."""

    def time_out(self, value: Any) -> Any:
        return iso(value)

    def json_out(self, value: Any) -> Any:
        return dump_json(value)

    def time_in(self, value: Any) -> Any:
        return parse_iso(value)

    def dict_in(self, value: Any) -> Any:
        return load_json(value)

    def list_in(self, value: Any) -> Any:
        return msgspec.json.decode(value)

    def times_out(self, values: Sequence[datetime | None]) -> list[Any]:
        return iso_many(values)  # one C pass for a batch's timestamps

    def entry_rows(self, entries: Iterable[TimelineEntry]) -> list[tuple[Any, ...]]:
        return text_entry_rows(entries)  # this class's hooks written in (a rebuild: one row an event)


ROWS = SqliteRows()


def _sql(suffix: str) -> Sql:
    return SqliteSql(suffix)


# Primary result codes that are faults of the file, the disk or another connection, never of
# the rows being written (https://sqlite.org/rescode.html): BUSY, LOCKED, NOMEM, READONLY,
# IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
STORE_FAULTS = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


def store_fault(err: BaseException) -> bool:
    """Whether ``err`` is SQLite saying the fault is the store's (``StoreUnavailable``)."""
    code = getattr(err, "sqlite_errorcode", None)
    return isinstance(err, sqlite3.Error) and isinstance(code, int) and code & 0xFF in STORE_FAULTS


def _transaction(conn: sqlite3.Connection, plan: Plan[T]) -> T:
    """Run ``plan`` in one write transaction on ``conn``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = run(plan, lambda step: _execute(conn, step))
        conn.execute("COMMIT")
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk, an I/O error): a
        # ROLLBACK then fails with "no transaction is active" and hid the error that said why.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out


def _execute(conn: sqlite3.Connection, step: Step) -> Rows | None:
    cur = send(step, conn)
    return cur.fetchall() if isinstance(step, Fetch) else None


class SqliteTimelineStore(PlannedStore):
    """See the module docstring. Create with ``await SqliteTimelineStore.open(path)``."""

    def __init__(self, path: Path, conn: sqlite3.Connection, pool: ThreadPoolExecutor, *, readonly: bool, suffix: str):
        super().__init__(_sql(suffix), ROWS, readonly=readonly)
        self.path = path
        self.suffix = suffix
        self._conn = conn
        self._pool = pool
        # Customer searches: a read-only connection and a thread of their own (``_search``).
        self._search_lane: tuple[sqlite3.Connection, ThreadPoolExecutor] | None = None
        self._search_opening = asyncio.Lock()
        self._file = _file_identity(path)  # the file the connection holds open (``_write``, ``_read``)

    def _describe(self) -> str:
        return str(self.path)

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, readonly: bool = False, suffix: str = "") -> SqliteTimelineStore:
        p = Path(path)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"timelines:{p.name}")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(pool, cls._connect, p, readonly, suffix)
        except BaseException:
            pool.shutdown(wait=False)
            raise
        return cls(p, conn, pool, readonly=readonly, suffix=suffix)

    @staticmethod
    def _connect(path: Path, readonly: bool, suffix: str) -> sqlite3.Connection:
        if readonly:
            # The API may start before the projector (or before it upgraded the schema): lay
            # down what is missing first, where the file is writable at all. Only a file we
            # may not write is let through; a busy one was waited for in _connect.
            try:
                SqliteTimelineStore._connect(path, False, suffix).close()
            except sqlite3.OperationalError as e:
                if not path.exists() or _is_locked(e):
                    raise
        if readonly:
            return SqliteTimelineStore._connect_readonly(path)
        _private_file(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        # Deleted and overwritten content is zeroed in the pages, not left in free space: what
        # an erasure redacts is gone from the file once the WAL is checkpointed (``_scrub``).
        conn.execute("PRAGMA secure_delete = ON")
        # The writer's page cache: large batches touch pages all over the timeline's key
        # (customer, seq); 64 MiB keeps a rebuild's working set in memory (default 2 MiB).
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        started = time.monotonic()
        if _transaction(conn, ensure_schema(suffix, search=not suffix and fts_available(conn))):
            log.info(
                "timelines.search_index_built",
                customers=count_customers(conn),
                seconds=round(time.monotonic() - started, 2),
            )
        return conn

    @staticmethod
    def _connect_readonly(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA query_only = ON")
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._conn.close)
        self._pool.shutdown(wait=True)
        if self._search_lane is not None:
            conn, pool = self._search_lane
            await loop.run_in_executor(pool, conn.close)
            pool.shutdown(wait=True)

    async def _search(self, plan: Plan[T]) -> T:
        await self._follow_file()
        return await self._search_on_lane(plan)

    async def _search_on_lane(self, plan: Plan[T]) -> T:
        """On a read-only connection and a thread of its own (WAL readers do not wait for each
        other, and sqlite3 lets go of the GIL while it scans): a search over a million
        customers no longer holds up the timelines every other request reads."""
        self._check_open()
        loop = asyncio.get_running_loop()
        async with self._search_opening:
            if self._search_lane is None:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"timelines-search:{self.path.name}")
                try:
                    conn = await loop.run_in_executor(pool, self._connect_readonly, self.path)
                except BaseException:
                    pool.shutdown(wait=False)
                    raise
                self._search_lane = (conn, pool)
        conn, pool = self._search_lane
        try:
            return await loop.run_in_executor(pool, run, plan, lambda step: _execute(conn, step))
        except sqlite3.Error as err:
            if store_fault(err):
                raise self._unavailable(err) from err
            raise

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except sqlite3.Error as err:
            if store_fault(err):
                raise self._unavailable(err) from err
            raise

    def _unavailable(self, err: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(f"{self.path}: {err} ({getattr(err, 'sqlite_errorname', 'SQLite error')})")

    async def _read(self, plan: Plan[T]) -> T:
        await self._follow_file()
        return await self._run(run, plan, lambda step: _execute(self._conn, step))

    async def _follow_file(self) -> None:
        """A reader (the API) whose file was deleted and made again (a projector restarted after
        ``rm timelines.db*``) or replaced (``mv``) reads the file now at the path: its connection
        held the old one, and it answered "disk I/O error" (503) until restarted. With no file
        at the path it says so; it does not make one (an empty store would answer 404s)."""
        if not self.readonly or _file_identity(self.path) == self._file:
            return
        async with self._search_opening:  # one reopening at a time; the search lane goes too
            now = _file_identity(self.path)
            if now == self._file:
                return
            if now is None:
                raise StoreUnavailable(f"{self.path} was deleted: the projector makes it again when restarted")
            old, self._conn = self._conn, await self._run(self._connect_readonly, self.path)
            self._file = now
            await self._run(old.close)
            if self._search_lane is not None:
                conn, pool = self._search_lane
                self._search_lane = None
                await asyncio.get_running_loop().run_in_executor(pool, conn.close)
                pool.shutdown(wait=False)
            log.warning("timelines.file_replaced", path=str(self.path), action="reading the file now at the path")

    async def _write(self, plan: Plan[T]) -> T:
        # The file deleted (``rm timelines.db*``) or replaced (``mv``) under a running writer:
        # its connection went on writing into the unlinked file, nobody opening the path read
        # what it wrote (a restarted API saw an empty store for good) and it said it was caught
        # up (found by the projection-database audit). Refused, once per batch (one stat).
        if _file_identity(self.path) != self._file:
            raise StoreUnavailable(
                f"{self.path} was deleted or replaced while the projector had it open: restart the "
                "projector (it folds the log into the file it then finds) and the API processes"
            )
        return await self._run(_transaction, self._conn, plan)

    async def _scrub(self) -> None:
        """After an erasure: copy the WAL into the database and truncate it, so the pages as
        they were before the redaction are in neither file (secure_delete zeroed their space)."""
        busy, _, _ = await self._run(lambda: self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
        if busy:
            log.warning("timelines.wal_checkpoint_busy", path=str(self.path))

    # -- rebuild --------------------------------------------------------------------

    async def begin_rebuild(self) -> SqliteTimelineStore:
        """A writable store over fresh, empty shadow tables in the same file."""
        self._write_guard()
        await self._write(each(Execute(f"DROP TABLE IF EXISTS {name}{SHADOW}") for name in TABLES))
        fresh = await SqliteTimelineStore.open(self.path, suffix=SHADOW)
        # Secondary indexes are built once at the swap (a sorted build) instead of being
        # updated row by row all through the rebuild; nothing the rebuild reads needs them.
        await fresh._write(drop_indexes(SHADOW))
        return fresh

    async def for_bulk_load(self) -> None:
        """For the rebuild's writer on the shadow copy: checkpoint the WAL every
        ``BULK_CHECKPOINT_PAGES`` pages instead of every 1,000. Each batch rewrites pages all
        over the timeline's key, and each checkpoint copies every page written since the last
        into the file: fewer checkpoints copy a page fewer times (the commits of the bench log's
        timeline rows took 1.0 instead of 1.45 us a row). The WAL grows to ~40 MiB meanwhile;
        the swap truncates it (``_scrub``)."""
        await self._run(self._conn.execute, f"PRAGMA wal_autocheckpoint = {BULK_CHECKPOINT_PAGES}")

    async def swap_in(self, fresh: TimelineStore) -> int:
        """Make the shadow tables of ``fresh`` the live ones, in one transaction. Every
        checkpoint key the live copy had is set to the fresh copy's checkpoint, so running
        projectors notice (CheckpointMismatch) and resume from there. Closes ``fresh``."""
        self._write_guard()
        if (
            not isinstance(fresh, SqliteTimelineStore)
            or fresh.path.resolve() != self.path.resolve()
            or fresh.suffix != SHADOW
        ):
            raise ValueError("swap_in takes the store returned by begin_rebuild")
        await fresh.close()
        seq = await self._write(self._swap(fresh.sql))
        await self._scrub()  # the old tables' pages (zeroed by secure_delete) leave the WAL too
        return seq

    def _swap(self, fresh: Sql) -> Plan[int]:
        yield from create_indexes(SHADOW)
        seq = yield from self.sql.carry_checkpoints(fresh)
        yield self.sql.carry_erasures(fresh)  # the register outlives the rebuild
        yield from drop_index()  # the live customers' search index (its triggers go with the table)
        for name in TABLES:
            yield Execute(f"DROP TABLE IF EXISTS {name}")
            yield Execute(f"ALTER TABLE {name}{SHADOW} RENAME TO {name}")
        if fts_available(self._conn):
            # Built once from the copy's customers (the rebuild wrote them without it).
            yield from ensure_index()
        return seq


def _private_file(path: Path) -> None:
    """The database only for its owner (0600; its -wal and -shm files take the same mode from
    it), in a directory made 0700 if this creates it. A file left 0644 by an older Relaydesk
    is made 0600."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        for item in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if item.exists() and item.stat().st_mode & 0o077:
                item.chmod(0o600)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _is_locked(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a file to WAL, waiting for other connections like a busy timeout would.

    Two processes opening a fresh file at once (the projector and the API under ``relaydesk
    up``) both try the switch; it needs an exclusive lock and SQLite fails it at once with
    "database is locked" instead of calling the busy handler, so we retry it ourselves."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if not _is_locked(e) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
