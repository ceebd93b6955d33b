"""The PostgreSQL timelines store's schema: its tables and indexes (``DDL``), the columns
added since (laid down at open), the secondary indexes a rebuild's copy is filled without and
gets at the swap, and ``ensure_schema``, run at every open."""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg
import structlog

from events.skips import count_skip
from services.timelines.fold import FOLD_VERSION
from services.timelines.search_pg import ensure_index as ensure_search
from services.timelines.store import StoreUnavailable

log = structlog.get_logger("services.timelines.postgres")

HOLDERS_SKIP = "timelines.lock_holders"

# How long opening waits for a lock another session holds on the schema's tables (an
# operator's LOCK TABLE: a CREATE INDEX IF NOT EXISTS waits for it) before the start fails
# naming who holds it; it hung without a line (the projection-database audit). The wait for
# another Relaydesk process opening the same schema (the advisory lock) is not limited.
OPEN_LOCK_TIMEOUT_S = 30.0

_ADD_COLUMN = re.compile(r"^ALTER TABLE \{s\}\.(\w+) ADD COLUMN IF NOT EXISTS (\w+) ")

DDL = """
CREATE TABLE IF NOT EXISTS {s}.timeline (
    customer_id text NOT NULL,
    seq bigint NOT NULL,
    conversation_id text,
    at timestamptz NOT NULL,
    kind text NOT NULL,
    channel text,
    direction text NOT NULL,
    agent_id text,
    message_id text,
    text text,
    reason jsonb,
    detail jsonb,
    PRIMARY KEY (customer_id, seq)
);
CREATE INDEX IF NOT EXISTS timeline_channel ON {s}.timeline (customer_id, channel, seq);
CREATE TABLE IF NOT EXISTS {s}.conversations (
    conversation_id text PRIMARY KEY,
    customer_id text NOT NULL,
    channel text,
    status text NOT NULL,
    agent_id text,
    opened_at timestamptz,
    last_activity_at timestamptz NOT NULL,
    resolved_at timestamptz,
    transfer_count integer NOT NULL,
    message_count integer NOT NULL,
    last_reason jsonb,
    last_seq bigint NOT NULL
);
ALTER TABLE {s}.conversations ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0;
ALTER TABLE {s}.conversations ADD COLUMN IF NOT EXISTS sla_due timestamptz;
ALTER TABLE {s}.conversations ADD COLUMN IF NOT EXISTS first_assigned_at timestamptz;
ALTER TABLE {s}.conversations ADD COLUMN IF NOT EXISTS first_response_at timestamptz;
ALTER TABLE {s}.conversations ADD COLUMN IF NOT EXISTS offers_declined integer NOT NULL DEFAULT 0;
ALTER TABLE {s}.conversations ADD COLUMN IF NOT EXISTS offers_expired integer NOT NULL DEFAULT 0;
ALTER TABLE {s}.conversations ADD COLUMN IF NOT EXISTS folded bytea NOT NULL DEFAULT ''::bytea;
CREATE INDEX IF NOT EXISTS conversations_status ON {s}.conversations (status, last_activity_at);
CREATE INDEX IF NOT EXISTS conversations_agent ON {s}.conversations (agent_id, last_activity_at);
CREATE INDEX IF NOT EXISTS conversations_customer ON {s}.conversations (customer_id, last_activity_at);
CREATE INDEX IF NOT EXISTS conversations_resolved ON {s}.conversations (status, resolved_at, conversation_id);
CREATE INDEX IF NOT EXISTS conversations_agent_resolved ON {s}.conversations (agent_id, resolved_at, conversation_id)
    WHERE status = 'resolved';
CREATE TABLE IF NOT EXISTS {s}.checkpoints (key text PRIMARY KEY, seq bigint NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.customers (
    customer_id text PRIMARY KEY,
    identities jsonb NOT NULL,
    tier text,
    flags jsonb NOT NULL,
    preferred_language text,
    crm_id text,
    created_at timestamptz,
    last_activity_at timestamptz,
    conversation_count integer NOT NULL,
    last_seq bigint NOT NULL,
    search text NOT NULL
);
ALTER TABLE {s}.customers ADD COLUMN IF NOT EXISTS erased boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS customers_activity ON {s}.customers (last_activity_at);
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.customer_links (
    merged_id text PRIMARY KEY,
    survivor_id text NOT NULL,
    seq bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_links_survivor ON {s}.customer_links (survivor_id);
CREATE TABLE IF NOT EXISTS {s}.erasures (
    customer_id text PRIMARY KEY,
    seq bigint NOT NULL,
    at timestamptz NOT NULL,
    reason text NOT NULL,
    merged_ids jsonb NOT NULL
);
"""


# The secondary indexes (every CREATE INDEX of the DDL): a rebuild's shadow copy is filled
# without them and they are built once, sorted, before the swap (``for_bulk_load``).
SECONDARY_INDEXES = [stmt.strip() for stmt in DDL.split(";") if stmt.strip().startswith("CREATE INDEX")]
INDEX_NAME = re.compile(r"^CREATE INDEX IF NOT EXISTS (\w+) ")


def quoted(schema: str) -> str:
    """The schema as an SQL identifier (``open`` only accepts names that need no escaping)."""
    return f'"{schema}"'


async def ensure_schema(dsn: str, schema: str, **connect: Any) -> None:
    """Create the schema, its tables, indexes and the columns added since, where missing.
    ``connect``: psycopg's connection options (the store's ``connect_timeout``). A lock held
    past ``OPEN_LOCK_TIMEOUT_S`` is ``StoreUnavailable`` naming who holds it."""
    try:
        await _ensure_schema(dsn, schema, **connect)
    except psycopg.errors.LockNotAvailable as err:
        said = (str(err).strip().splitlines() or [""])[0]
        holders = await lock_holders(dsn, schema, **connect)
        raise StoreUnavailable(f"schema {schema}: {said}{holders}") from err


async def _ensure_schema(dsn: str, schema: str, **connect: Any) -> None:
    s = quoted(schema)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, **connect) as conn, conn.transaction():
        # Two processes starting at once must not race on CREATE ... IF NOT EXISTS.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"relaydesk:{schema}",))
        await conn.execute(f"SET LOCAL lock_timeout = {int(OPEN_LOCK_TIMEOUT_S * 1000)}")
        cur = await conn.execute("SELECT to_regclass(%s)", (f"{s}.timeline",))
        row = await cur.fetchone()
        fresh = row is None or row[0] is None
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        cur = await conn.execute(
            "SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = %s",
            (schema,),
        )
        have = {r[0] for r in await cur.fetchall()}
        for stmt in (x.strip() for x in DDL.split(";")):
            added = _ADD_COLUMN.match(stmt)
            if not stmt or (added and f"{added[1]}.{added[2]}" in have):
                continue  # ALTER TABLE takes an exclusive lock even when there is nothing to add
            await conn.execute(stmt.format(s=s))
        if fresh:
            # Rows from an older Relaydesk without a meta table have no version: stale.
            await conn.execute(
                f"INSERT INTO {s}.meta (key, value) VALUES ('fold_version', %s) ON CONFLICT DO NOTHING",
                (str(FOLD_VERSION),),
            )
        started = time.monotonic()
        if await ensure_search(conn, schema):
            cur = await conn.execute(f"SELECT count(*) FROM {s}.customers")
            row = await cur.fetchone()
            count = row[0] if row else 0
            log.info("timelines.search_index_built", customers=count, seconds=round(time.monotonic() - started, 2))


async def lock_holders(dsn: str, schema: str, **connect: Any) -> str:
    """Who holds a lock on a table of ``schema`` that a writer waits for (``; held by pid 4242
    (postgres, psql) for 95 s``), asked on a connection of its own; empty when none is seen or
    the question fails (a lock timeout is said all the same)."""
    query = """
        SELECT DISTINCT a.pid, a.usename, a.application_name,
               extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::int
        FROM pg_locks l
        JOIN pg_class c ON c.oid = l.relation
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE n.nspname = %s AND l.granted AND a.pid <> pg_backend_pid()
          AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
        ORDER BY 4 DESC NULLS LAST LIMIT 3
    """
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, **connect) as conn:
            rows = await (await conn.execute(query, (schema,))).fetchall()
    except psycopg.Error as err:
        # The lock timeout is said without its holder; why the question failed is said here.
        log.warning("skipped", where=HOLDERS_SKIP, schema=schema, error=type(err).__name__)
        count_skip(HOLDERS_SKIP)
        return ""
    held = [f"pid {pid} ({user}, {app or 'no application_name'}) for {age} s" for pid, user, app, age in rows]
    return f"; held by {', '.join(held)}" if held else ""
