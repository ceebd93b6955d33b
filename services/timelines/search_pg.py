"""The customer search's index, PostgreSQL's half (SQLite's and what an index may change:
``search.py``).

A table of its own, ``customer_search (customer_id, search)``, with a ``pg_trgm`` GIN index on
``search``, kept by triggers on ``customers`` that write it only when a row is inserted or
deleted or its ``search`` value changes. Not a GIN index on ``customers.search`` itself: the
customers table is indexed on ``last_activity_at``, which nearly every event moves, so its
updates that move it are not HOT (an index column changed) and each would insert every trigram
of the row into the GIN index again.
A search reads ``customer_search`` through ``LIKE`` (what the trigram index serves) for the ids
of at most ``search.CANDIDATES`` matches, then reads those customers with the substring test
kept, so it finds what the scan finds.

Where ``pg_trgm`` cannot be had (the role may not create it, or the server lacks the contrib
package), the search scans as before, said once per process at start; the service runs.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog

from services.timelines import search
from services.timelines.queries import SHADOW
from services.timelines.rows import search_form
from services.timelines.steps import Fetch, Plan, Rows

log = structlog.get_logger(__name__)

TABLE = "customer_search"
EXTENSION = "pg_trgm"
_warned: set[str] = set()


def like_pattern(needle: str) -> str:
    """``needle`` anywhere, as a LIKE pattern (backslash is LIKE's escape by default)."""
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_plan(sql: Any, schema_name: str, q: str, tier: str | None, limit: int) -> Plan[Rows]:
    """``Sql.customer_search`` for the schema quoted as ``schema_name``: as SQLite's
    (``search.SqliteSql``), the ids of at most ``CANDIDATES`` matches first (a rare text through
    the trigram index; a common one the planner finds by a scan that stops at the limit), then
    their rows; more matches than that, the scan of every customer, as before the index."""
    needle = search_form(q)
    if len(needle) >= search.MIN_INDEXED:
        have = yield Fetch("SELECT to_regclass(%s) IS NOT NULL", (f"{schema_name}.{TABLE}",))
        if have and have[0][0]:
            found = yield Fetch(
                f"SELECT customer_id FROM {schema_name}.{TABLE} WHERE search LIKE %s LIMIT %s",
                (like_pattern(needle), search.CANDIDATES + 1),
            )
            if len(found) <= search.CANDIDATES:
                within = ("customer_id = ANY(%s)", [[r[0] for r in found]])
                rows: Rows = yield Fetch(*sql.customer_list(q, tier, limit, within))
                return rows
    rows = yield Fetch(*sql.customer_list(q, tier, limit))
    return rows


def _statements(s: str, ops: str) -> list[str]:
    return [
        f"CREATE TABLE {s}.{TABLE} (customer_id text PRIMARY KEY, search text NOT NULL)",
        f"INSERT INTO {s}.{TABLE} (customer_id, search) SELECT customer_id, search FROM {s}.customers",
        # fastupdate off: no pending list that every search reads through and the planner
        # prices high (it then chose a scan); the index is written only when a text changes.
        f"CREATE INDEX customer_search_trgm ON {s}.{TABLE} USING gin (search {ops}) WITH (fastupdate = off)",
        # The schema is the trigger's own (TG_TABLE_SCHEMA), not written in: a rebuild's copy is
        # built under <schema>__next and renamed into place.
        f"""CREATE OR REPLACE FUNCTION {s}.customer_search_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        EXECUTE format('DELETE FROM %I.{TABLE} WHERE customer_id = $1', TG_TABLE_SCHEMA) USING OLD.customer_id;
    ELSE
        EXECUTE format('INSERT INTO %I.{TABLE} (customer_id, search) VALUES ($1, $2)'
            ' ON CONFLICT (customer_id) DO UPDATE SET search = excluded.search', TG_TABLE_SCHEMA)
            USING NEW.customer_id, NEW.search;
    END IF;
    RETURN NULL;
END $$""",
        f"CREATE TRIGGER customer_search_insert AFTER INSERT ON {s}.customers"
        f" FOR EACH ROW EXECUTE FUNCTION {s}.customer_search_sync()",
        f"CREATE TRIGGER customer_search_delete AFTER DELETE ON {s}.customers"
        f" FOR EACH ROW EXECUTE FUNCTION {s}.customer_search_sync()",
        # An upsert names ``search`` in its SET whether or not it changed: WHEN (evaluated
        # without calling the function) leaves the search table alone then.
        f"CREATE TRIGGER customer_search_update AFTER UPDATE OF search ON {s}.customers"
        f" FOR EACH ROW WHEN (OLD.search IS DISTINCT FROM NEW.search) EXECUTE FUNCTION {s}.customer_search_sync()",
    ]


async def _trgm_ops(conn: psycopg.AsyncConnection[Any]) -> str | None:
    """The ``gin_trgm_ops`` operator class, its schema written out (the extension is wherever
    it was created), creating the extension if it is not there; None, said once, if it cannot."""
    try:
        async with conn.transaction():  # a savepoint: a refusal leaves the schema's transaction usable
            await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {EXTENSION}")
    except psycopg.Error as err:
        reason = f"CREATE EXTENSION {EXTENSION} failed: {type(err).__name__}: {' '.join(str(err).split())}"
        if reason not in _warned:
            _warned.add(reason)
            log.warning("timelines.search_unindexed", reason=reason, effect="customer searches scan every customer")
        return None
    cur = await conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s",
        (EXTENSION,),
    )
    row = await cur.fetchone()
    return None if row is None else f'"{row[0]}".gin_trgm_ops'


async def ensure_index(conn: psycopg.AsyncConnection[Any], schema: str) -> bool:
    """In a transaction of ``conn``: the search table, its index and triggers for ``schema``
    where they are missing (a rebuild's copy, ``<schema>__next``, gets them at the swap:
    ``build``); whether they were built now."""
    if schema.endswith(SHADOW):
        return False
    cur = await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".{TABLE}',))
    row = await cur.fetchone()
    if row is not None and row[0] is not None:
        return False
    try:
        async with conn.transaction():  # a savepoint: a failed build leaves the tables as they were
            return await build(conn, schema)
    except psycopg.Error as err:
        log.warning(
            "timelines.search_unindexed",
            reason=f"building the search index failed: {type(err).__name__}",
            effect="customer searches scan every customer",
        )
        return False


async def build(conn: psycopg.AsyncConnection[Any], schema: str) -> bool:
    """In a transaction of ``conn``: the search table of ``schema`` filled from its customers in
    one pass, then its GIN index (one sorted build) and the triggers; False if ``pg_trgm``
    cannot be had."""
    ops = await _trgm_ops(conn)
    if ops is None:
        return False
    s = f'"{schema}"'
    await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")  # the GIN build, sorted in memory
    for trigger in ("customer_search_insert", "customer_search_delete", "customer_search_update"):
        await conn.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {s}.customers")
    await conn.execute(f"DROP TABLE IF EXISTS {s}.{TABLE}")
    for stmt in _statements(s, ops):
        await conn.execute(stmt)
    return True
