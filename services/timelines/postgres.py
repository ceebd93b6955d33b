"""PostgreSQL timeline store (psycopg 3, async): ``RELAYDESK_PROJECTION_DSN=postgresql://...``.

All tables live in one schema (default ``relaydesk_timelines``). One connection per store,
used by one coroutine at a time; a broken connection is replaced on the next call.

Concurrency: every writing transaction touches the ``checkpoints`` table first (a row lock on
its key), so writers sharing a key serialise and a swap, which takes an exclusive lock on
that table first, waits for running batches and makes new ones wait for it.

Rebuild and swap: a rebuild fills a shadow schema ``<schema>__next``; ``swap_in`` renames the
live schema away, renames the shadow one into its place and drops the old one, all in one
transaction. Readers keep reading the old rows until it commits; their next statement
resolves the names to the new tables (PostgreSQL re-plans prepared statements after DDL).

Faults of the database's own (``store_fault``: a connection lost or refused, a lock held past
``WRITE_LOCK_TIMEOUT_S``/``READ_LOCK_TIMEOUT_S``, a full disk, a read-only standby) leave as
``StoreUnavailable``, a lock timeout naming who holds the lock; connecting gives up after
``CONNECT_TIMEOUT_S`` unless the DSN says otherwise. The tables and ``ensure_schema``, run at
every open, are ``postgres_schema.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import msgspec
import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from services.timelines.base import PlannedStore
from services.timelines.postgres_schema import INDEX_NAME, SECONDARY_INDEXES, ensure_schema, lock_holders, quoted
from services.timelines.queries import SHADOW, TABLES, Sql
from services.timelines.rowmap import ENTRY_COLUMNS, RowCodec
from services.timelines.search_pg import TABLE as SEARCH_TABLE
from services.timelines.search_pg import build as build_search
from services.timelines.search_pg import search_plan
from services.timelines.steps import Execute, ExecuteMany, Fetch, Plan, Rows, Step, each, run_async, send
from services.timelines.store import StoreUnavailable, TimelineStore

T = TypeVar("T")
log = structlog.get_logger(__name__)

DEFAULT_SCHEMA = "relaydesk_timelines"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")

# A connection attempt's limit where the DSN (or PGCONNECT_TIMEOUT) sets none: libpq waits
# for ever on a server that accepts and never answers, and the start hung without a word.
CONNECT_TIMEOUT_S = 10
# How long a statement waits for a lock another session holds (an operator's LOCK TABLE, a
# migration) before it fails as ``StoreUnavailable``: the projector then says so in its
# log and retries, the API answers 503; both waited silently for as long as it was held.
WRITE_LOCK_TIMEOUT_S = 30.0
READ_LOCK_TIMEOUT_S = 10.0


def store_fault(err: BaseException) -> bool:
    """Whether ``err`` is a fault of the database, the connection or the session, never of the
    rows being written: a connection lost or refused, a server shutting down, a lock or
    statement timeout, a deadlock, a full disk, a read-only standby, a privilege revoked. A
    row beyond a limit of PostgreSQL's (class 54: an index entry too large) is the event's."""
    if isinstance(err, psycopg.errors.ProgramLimitExceeded):
        return False
    return isinstance(
        err,
        psycopg.OperationalError
        | psycopg.InterfaceError
        | psycopg.errors.ReadOnlySqlTransaction
        | psycopg.errors.InsufficientPrivilege,
    )


# A peer gone without a reset (a partition, a host powered off) is otherwise noticed when the
# kernel gives up retransmitting, ~15 minutes, all the while the projector and the API's reads
# wait on it: probe an idle connection after 30 s and give up on unacknowledged data after 60 s.
# libpq ignores these on a Unix socket.
TCP_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}


def connect_options(dsn: str) -> dict[str, Any]:
    """``connect_timeout`` (``CONNECT_TIMEOUT_S``) and ``TCP_OPTIONS``, each unless the DSN (or,
    for the timeout, the environment) sets it."""
    given = conninfo_to_dict(dsn)
    options = {key: value for key, value in TCP_OPTIONS.items() if key not in given}
    if "connect_timeout" not in given and not os.environ.get("PGCONNECT_TIMEOUT"):
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    return options


class PostgresSql(Sql):
    param = "%s"
    text_param = "%s::text"
    contains = "strpos"
    nulls_last = " NULLS LAST"
    lock = " FOR UPDATE"
    max_ids = 1 << 30  # one array parameter

    def __init__(self, schema: str) -> None:
        super().__init__({name: f"{quoted(schema)}.{name}" for name in TABLES})
        self.schema = quoted(schema)

    def customer_search(self, q: str, tier: str | None, limit: int) -> Plan[Rows]:
        return search_plan(self, self.schema, q, tier, limit)  # through pg_trgm (search_pg.py)

    def in_ids(self, column: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
        # One id (the usual case for a timeline): a plain index range scan.
        if len(ids) == 1:
            return f"{column} = %s", [ids[0]]
        return f"{column} = ANY(%s)", [list(ids)]

    def lock_checkpoint(self, key: str) -> Plan[int]:
        """Lock the key's row, so writers sharing a key serialise (see the module docstring)."""
        yield Execute(f"INSERT INTO {self.checkpoints} (key, seq) VALUES (%s, 0) ON CONFLICT (key) DO NOTHING", (key,))
        rows = yield Fetch(f"{self.select_checkpoint} FOR UPDATE", (key,))
        return int(rows[0][0]) if rows else 0

    def set_checkpoint(self, key: str, seq: int) -> Step:
        return Execute(f"UPDATE {self.checkpoints} SET seq = %s WHERE key = %s", (seq, key))

    def highest_checkpoint(self) -> Plan[int]:
        rows = yield Fetch(f"SELECT key, seq FROM {self.checkpoints} ORDER BY key FOR UPDATE")
        return max((int(r[1]) for r in rows), default=0)


class PostgresRows(RowCodec):
    """``timestamptz`` and ``jsonb``: psycopg maps both ways but for JSON going in."""

    def json_out(self, value: dict[str, Any] | list[Any] | None) -> Any:
        # msgspec's encoder, not the json module's (3-4x faster; jsonb stores the same value)
        return None if value is None else Jsonb(value, dumps=_dumps)

    def text_out(self, value: str | None) -> str | None:
        return _without_nul(value) if value else value


# PostgreSQL's text and jsonb cannot hold NUL (SQLite's can): a customer's message with one was
# refused by the database and quarantined, missing from the timeline. It is stored with this
# character in the NUL's place.
NUL_STAND_IN = "\ufffd"


def _dumps(value: Any) -> str:
    encoded = _JSON.encode(value)
    if b"\\u0000" in encoded:  # rare: walked and encoded again only then
        encoded = _JSON.encode(_without_nul(value))
    return encoded.decode()


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", NUL_STAND_IN)
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


_JSON = msgspec.json.Encoder()


ROWS = PostgresRows()


async def _execute(cur: psycopg.AsyncCursor[Any], step: Step, copy: tuple[str, str] | None = None) -> Rows | None:
    """``copy``: (the timeline insert, its COPY statement): a fresh shadow copy takes its
    timeline rows by COPY (several times faster than inserts; nothing there to conflict with)."""
    if copy is not None and isinstance(step, ExecuteMany) and step.sql == copy[0]:
        async with cur.copy(copy[1]) as out:
            for row in step.rows:
                await out.write_row(row)
        return None
    await send(step, cur)
    return await cur.fetchall() if isinstance(step, Fetch) else None


class PostgresTimelineStore(PlannedStore):
    """See the module docstring. Create with ``await PostgresTimelineStore.open(dsn)``."""

    def __init__(self, dsn: str, schema: str, conn: psycopg.AsyncConnection[Any], *, readonly: bool) -> None:
        super().__init__(PostgresSql(schema), ROWS, readonly=readonly)
        self.dsn = dsn
        self.schema = schema
        self._conn = conn
        self._lock = asyncio.Lock()
        # Customer searches: a read-only connection of their own, one at a time (``_search``).
        self._search_conn: psycopg.AsyncConnection[Any] | None = None
        self._search_lock = asyncio.Lock()
        # Set on a shadow copy by ``begin_rebuild``: written by one rebuild, from empty, in
        # log order, so no timeline row can already be there and COPY replaces the inserts.
        self.bulk_load = False

    def _describe(self) -> str:
        return f"schema {self.schema}"

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    async def open(cls, dsn: str, *, readonly: bool = False, schema: str = DEFAULT_SCHEMA) -> PostgresTimelineStore:
        if not _NAME.match(schema):
            raise ValueError(f"not a usable schema name: {schema!r} (lower case letters, digits, _)")
        try:
            await ensure_schema(dsn, schema, **connect_options(dsn))
        except psycopg.errors.InsufficientPrivilege:
            if not readonly:
                raise  # a reader may run as a user that cannot create; the projector creates
        conn = await cls._connect(dsn, readonly)
        return cls(dsn, schema, conn, readonly=readonly)

    @staticmethod
    async def _connect(dsn: str, readonly: bool) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name="relaydesk-timelines", **connect_options(dsn)
        )
        await conn.execute("SET TIME ZONE 'UTC'")
        wait = READ_LOCK_TIMEOUT_S if readonly else WRITE_LOCK_TIMEOUT_S
        await conn.execute(f"SET lock_timeout = {int(wait * 1000)}")
        if readonly:
            await conn.execute("SET default_transaction_read_only = on")
        return conn

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        self._check_open()
        if self._conn.closed or self._conn.broken:
            self._conn = await self._connect(self.dsn, self.readonly)
        return self._conn

    async def _unavailable(self, err: psycopg.Error) -> StoreUnavailable:
        """The fault said in one line: its kind, PostgreSQL's first line, and for a lock timeout
        who holds a lock on the schema's tables (the session an operator finds and ends)."""
        said = (str(err).strip().splitlines() or [""])[0]
        reason = f"{self._describe()}: {type(err).__name__}: {said}"
        if isinstance(err, psycopg.errors.LockNotAvailable):
            reason += await lock_holders(self.dsn, self.schema, **connect_options(self.dsn))
        return StoreUnavailable(reason)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._conn.close()
        if self._search_conn is not None:
            await self._search_conn.close()

    @contextlib.asynccontextmanager
    async def _faults(self) -> AsyncIterator[None]:
        """A fault of the database's own (``store_fault``) leaves as ``StoreUnavailable``."""
        try:
            yield
        except psycopg.Error as err:
            if not store_fault(err):
                raise
            raise await self._unavailable(err) from err

    async def _search(self, plan: Plan[T]) -> T:
        """On a read-only connection of its own: a search that scans every customer no longer
        holds up the reads waiting for the store's connection."""
        async with self._search_lock, self._faults():
            self._check_open()
            if self._search_conn is None or self._search_conn.closed or self._search_conn.broken:
                self._search_conn = await self._connect(self.dsn, True)
                # A search's plan depends on its text (a rare one through the trigram index, a
                # common one by a scan): never one generic plan for every text.
                await self._search_conn.execute("SET plan_cache_mode = force_custom_plan")
            async with self._search_conn.cursor() as cur:
                return await run_async(plan, lambda step: _execute(cur, step))

    async def _read(self, plan: Plan[T]) -> T:
        async with self._lock, self._faults():
            conn = await self._connection()
            async with conn.cursor() as cur:
                return await run_async(plan, lambda step: _execute(cur, step))

    async def _write(self, plan: Plan[T]) -> T:
        copy = None
        if self.bulk_load and self.fault_hook is None:
            copy = (self.sql.insert_entry, f"COPY {self.sql.timeline} ({ENTRY_COLUMNS}) FROM STDIN")
        async with self._lock, self._faults():
            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cur:
                return await run_async(plan, lambda step: _execute(cur, step, copy))

    async def _scrub(self) -> None:
        """After an erasure: VACUUM the tables an erasure rewrites, so the dead versions of the
        redacted rows are removed rather than left until autovacuum comes by. (Their bytes may
        stay in freed page space and in PostgreSQL's WAL until reused; see the README.)"""
        async with self._lock, self._faults():
            conn = await self._connection()
            cur = await conn.execute("SELECT to_regclass(%s)", (f"{quoted(self.schema)}.{SEARCH_TABLE}",))
            row = await cur.fetchone()
            search = [f"{quoted(self.schema)}.{SEARCH_TABLE}"] if row and row[0] else []
            # The search table too: its old rows (and their GIN entries) held the erased addresses.
            for table in (self.sql.timeline, self.sql.customers, *search):
                try:
                    await conn.execute(f"VACUUM {table}")
                except psycopg.Error as err:  # e.g. not the table owner: the rows are redacted all the same
                    log.warning("timelines.vacuum_skipped", table=table, error=type(err).__name__)
                    return

    # -- rebuild --------------------------------------------------------------------

    async def begin_rebuild(self) -> PostgresTimelineStore:
        self._write_guard()
        shadow = self.schema + SHADOW
        await self._write(each([Execute(f"DROP SCHEMA IF EXISTS {quoted(shadow)} CASCADE")]))
        fresh = await PostgresTimelineStore.open(self.dsn, schema=shadow)
        fresh.bulk_load = True
        return fresh

    async def for_bulk_load(self) -> None:
        """For the rebuild's writer on a shadow copy (written from empty in log order,
        ``bulk_load``): drop its secondary indexes (``swap_in``
        builds them again, each in one sorted pass instead of an insert per row) and commit
        without waiting for the WAL flush. The latter risks nothing: a crash loses at most the
        last batches of a copy that is then never swapped in, and the swap's own commit, which
        waits for the flush, comes after every one of them in the WAL."""
        self.bulk_load = True
        s = quoted(self.schema)
        names = [m[1] for m in map(INDEX_NAME.match, SECONDARY_INDEXES) if m]
        await self._write(each(Execute(f"DROP INDEX IF EXISTS {s}.{name}") for name in names))
        async with self._lock:
            conn = await self._connection()
            await conn.execute("SET synchronous_commit = off")

    async def swap_in(self, fresh: TimelineStore) -> int:
        self._write_guard()
        if not isinstance(fresh, PostgresTimelineStore) or fresh.schema != self.schema + SHADOW:
            raise ValueError("swap_in takes the store returned by begin_rebuild")
        await fresh.close()
        # The shadow copy's indexes (``for_bulk_load``; IF NOT EXISTS: a copy that kept them
        # keeps them), built before the swap so its lock is held no longer than before.
        shadow = quoted(fresh.schema)
        await self._write(each(Execute(stmt.format(s=shadow)) for stmt in SECONDARY_INDEXES))
        async with self._lock:  # the customer search's index, once, from the copy's customers
            conn = await self._connection()
            async with conn.transaction():
                await build_search(conn, fresh.schema)
        return await self._write(self._swap(fresh.schema))

    def _swap(self, shadow: str) -> Plan[int]:
        live, old = quoted(self.schema), quoted(f"{self.schema}__old_{uuid.uuid4().hex[:8]}")
        # The swap waits for every lock it needs however long (a reader's long query on the
        # old tables): failing it on WRITE_LOCK_TIMEOUT_S threw away the whole rebuild.
        yield Execute("SET LOCAL lock_timeout = 0")
        # First: make running batches finish and new ones wait (see the module docstring).
        yield Execute(f"LOCK TABLE {self.sql.checkpoints} IN ACCESS EXCLUSIVE MODE")
        seq = yield from self.sql.carry_checkpoints(PostgresSql(shadow))
        yield self.sql.carry_erasures(PostgresSql(shadow))  # the register outlives the rebuild
        yield Execute(f"ALTER SCHEMA {live} RENAME TO {old}")
        yield Execute(f"ALTER SCHEMA {quoted(shadow)} RENAME TO {live}")
        yield Execute(f"DROP SCHEMA {old} CASCADE")
        return seq
