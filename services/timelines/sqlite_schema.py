"""The SQLite timeline store's schema (``sqlite.py``): its tables and indexes for one copy
(the live one, or a rebuild's shadow copy named with a suffix), the columns added since a
table was first released, and laying down what a file lacks when a store opens it.

A rebuild's copy is written without its secondary indexes (``drop_indexes``) and gets them
once at the swap (``create_indexes``), a sorted build instead of row-by-row updates.
"""

from __future__ import annotations

import uuid

from services.timelines.fold import FOLD_VERSION
from services.timelines.queries import TABLES
from services.timelines.search import SqliteSql, ensure_index
from services.timelines.steps import Execute, Fetch, Plan

# Columns added after a table was first released: ``ensure_schema`` adds them to older files
# (and FOLD_VERSION goes up, so the projector refills them from the log).
ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "conversations": [
        ("priority", "INTEGER NOT NULL DEFAULT 0"),
        ("sla_due", "TEXT"),
        ("first_assigned_at", "TEXT"),
        ("first_response_at", "TEXT"),
        ("offers_declined", "INTEGER NOT NULL DEFAULT 0"),
        ("offers_expired", "INTEGER NOT NULL DEFAULT 0"),
        ("folded", "BLOB NOT NULL DEFAULT x''"),
    ],
    "customers": [("erased", "INTEGER NOT NULL DEFAULT 0")],
}


def schema(suffix: str, tag: str) -> dict[str, list[str]]:
    """Per table: its CREATE TABLE, then its indexes. Index names stay with their table across
    a rename, so each generation of tables gets its own ``tag`` in its index names."""
    t, c, k, u, m, lk, er = (name + suffix for name in TABLES)
    return {
        t: [
            f"""CREATE TABLE IF NOT EXISTS {t} (
                customer_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                conversation_id TEXT,
                at TEXT NOT NULL,
                kind TEXT NOT NULL,
                channel TEXT,
                direction TEXT NOT NULL,
                agent_id TEXT,
                message_id TEXT,
                text TEXT,
                reason TEXT,
                detail TEXT,
                PRIMARY KEY (customer_id, seq)
            ) WITHOUT ROWID""",
            f"CREATE INDEX IF NOT EXISTS ix_{tag}_timeline_channel ON {t} (customer_id, channel, seq)",
        ],
        c: [
            f"""CREATE TABLE IF NOT EXISTS {c} (
                conversation_id TEXT PRIMARY KEY,
                customer_id TEXT NOT NULL,
                channel TEXT,
                status TEXT NOT NULL,
                agent_id TEXT,
                opened_at TEXT,
                last_activity_at TEXT NOT NULL,
                resolved_at TEXT,
                transfer_count INTEGER NOT NULL,
                message_count INTEGER NOT NULL,
                last_reason TEXT,
                last_seq INTEGER NOT NULL,
                priority INTEGER NOT NULL DEFAULT 0,
                sla_due TEXT,
                first_assigned_at TEXT,
                first_response_at TEXT,
                offers_declined INTEGER NOT NULL DEFAULT 0,
                offers_expired INTEGER NOT NULL DEFAULT 0,
                folded BLOB NOT NULL DEFAULT x''
            )""",
            f"CREATE INDEX IF NOT EXISTS ix_{tag}_conv_status ON {c} (status, last_activity_at)",
            f"CREATE INDEX IF NOT EXISTS ix_{tag}_conv_agent ON {c} (agent_id, last_activity_at)",
            f"CREATE INDEX IF NOT EXISTS ix_{tag}_conv_customer ON {c} (customer_id, last_activity_at)",
            # Resolved ones newest first, a page at a time (GET /v1/conversations?status=resolved).
            # (Not partial: SQLite's planner preferred (status, last_activity_at) and a sort to it.)
            f"CREATE INDEX IF NOT EXISTS ix_{tag}_conv_resolved ON {c} (status, resolved_at, conversation_id)",
            f"CREATE INDEX IF NOT EXISTS ix_{tag}_conv_agent_resolved ON {c} (agent_id, resolved_at, conversation_id)"
            " WHERE status = 'resolved'",
        ],
        k: [f"CREATE TABLE IF NOT EXISTS {k} (key TEXT PRIMARY KEY, seq INTEGER NOT NULL)"],
        u: [
            f"""CREATE TABLE IF NOT EXISTS {u} (
                customer_id TEXT PRIMARY KEY,
                identities TEXT NOT NULL,
                tier TEXT,
                flags TEXT NOT NULL,
                preferred_language TEXT,
                crm_id TEXT,
                created_at TEXT,
                last_activity_at TEXT,
                conversation_count INTEGER NOT NULL,
                last_seq INTEGER NOT NULL,
                search TEXT NOT NULL,
                erased INTEGER NOT NULL DEFAULT 0
            )""",
            f"CREATE INDEX IF NOT EXISTS ix_{tag}_cust_activity ON {u} (last_activity_at)",
        ],
        m: [f"CREATE TABLE IF NOT EXISTS {m} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"],
        lk: [
            f"""CREATE TABLE IF NOT EXISTS {lk} (
                merged_id TEXT PRIMARY KEY,
                survivor_id TEXT NOT NULL,
                seq INTEGER NOT NULL
            )""",
            f"CREATE INDEX IF NOT EXISTS ix_{tag}_links_survivor ON {lk} (survivor_id)",
        ],
        # The erasure register (``rows.ErasureRecord``; carried over by a swap, never refolded).
        er: [
            f"""CREATE TABLE IF NOT EXISTS {er} (
                customer_id TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                at TEXT NOT NULL,
                reason TEXT NOT NULL,
                merged_ids TEXT NOT NULL
            )"""
        ],
    }


def drop_indexes(suffix: str) -> Plan[None]:
    names = [name + suffix for name in TABLES]
    marks = ", ".join("?" for _ in names)
    found = yield Fetch(
        f"SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks})", names
    )
    for (index,) in found:
        yield Execute(f"DROP INDEX IF EXISTS {index}")


def create_indexes(suffix: str) -> Plan[None]:
    """The secondary indexes of the tables named with ``suffix`` (``IF NOT EXISTS``: a copy
    that has them keeps them)."""
    have = yield Fetch("SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    indexed = {r[0] for r in have}
    for table, statements in schema(suffix, uuid.uuid4().hex[:8]).items():
        if table in indexed:
            continue
        for stmt in statements[1:]:  # the first is the CREATE TABLE
            yield Execute(stmt)


def _add_missing_indexes(table: str, statements: list[str], columns: set[str]) -> Plan[None]:
    """The indexes of ``statements`` an older file's ``table`` lacks (e.g. the resolved
    conversations' ones), of those whose ``columns`` it has (a file too old for one is
    rebuilt: its fold version is stale). Index names carry their generation's tag, so an
    index is known by what follows its table's name (SQLite quotes it after a rename)."""
    found = yield Fetch(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
    )
    kept = [str(r[0]) for r in found]
    for stmt in statements:
        shape = stmt.split(f" ON {table} ", 1)[1]
        indexed = {name.strip() for name in shape[1 : shape.index(")")].split(",")}
        if indexed <= columns and not any(sql.endswith(shape) for sql in kept):
            yield Execute(stmt)


def ensure_schema(suffix: str, *, search: bool = False) -> Plan[bool]:
    """Create the tables that are missing, add the columns older files lack, and with
    ``search`` the customer search's index (``search.py``); whether that was built now."""
    created: set[str] = set()
    for table, statements in schema(suffix, uuid.uuid4().hex[:8]).items():
        exists = yield Fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        if not exists:
            created.add(table)
            for stmt in statements:
                yield Execute(stmt)
            continue
        have = {r[1] for r in (yield Fetch(f"PRAGMA table_info({table})"))}
        for column, decl in ADDED_COLUMNS.get(table.removesuffix(suffix) if suffix else table, []):
            if column not in have:
                yield Execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        if not suffix:  # the live tables (a rebuild's copy gets its indexes at the swap)
            columns = have | {column for column, _ in ADDED_COLUMNS.get(table, [])}
            yield from _add_missing_indexes(table, statements[1:], columns)
    if "timeline" + suffix in created:
        # Rows from an older Relaydesk without a meta table have no version: stale.
        yield Execute(SqliteSql(suffix).insert_fold_version, (str(FOLD_VERSION),))
    return (yield from ensure_index(suffix)) if search else False
