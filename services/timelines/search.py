"""The customer search's index (``customers(q=...)``), SQLite's half; PostgreSQL's is
``search_pg.py``.

What a search finds is fixed by the scan (``Sql.customer_list``): customers whose ``search``
column (``CustomerSummary.search_text``) holds ``search_form(q)``, newest activity first. An
index only narrows the rows that scan reads: the substring test stays in the statement, so an
index can make a search faster, never give other rows.

SQLite: an FTS5 table with the ``trigram`` tokenizer, contentless (``content=''``: it keeps no
copy of the text), keyed by the customers table's rowid, kept by triggers that touch it only
when a customer row is inserted or deleted or its ``search`` value changes: the summary row is
rewritten on nearly every event, its search text rarely. A query of fewer than three
characters has no trigram and is a scan; a query that matches more than ``CANDIDATES``
customers is a scan too, in activity order, which finds a common text's newest matches soon
(the index would hand over every match to be sorted).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec
import structlog

from services.timelines.queries import TABLES, Sql
from services.timelines.rows import search_form
from services.timelines.steps import Execute, Fetch, Plan, Rows

log = structlog.get_logger(__name__)

MIN_INDEXED = 3  # a trigram index knows nothing shorter
CANDIDATES = 5000  # more matches than this: the scan finds the newest of them sooner

INDEX = "customers_search"
TRIGGERS = ("customers_search_insert", "customers_search_delete", "customers_search_update")


def fts_phrase(needle: str) -> str:
    """``needle`` as one FTS5 string: its trigrams one after the other, i.e. the substring."""
    return '"' + needle.replace('"', '""') + '"'


class SqliteSql(Sql):
    """``Sql`` for the SQLite tables named with ``suffix``, searching through the index where
    the file has it (a read-only API on a file not yet upgraded has not)."""

    def __init__(self, suffix: str) -> None:
        super().__init__({name: name + suffix for name in TABLES})
        self.search_index = INDEX + suffix

    def customer_search(self, q: str, tier: str | None, limit: int) -> Plan[Rows]:
        needle = search_form(q)
        # FTS5's query language cannot quote a NUL (the API refuses one: services.api.nul_refusal).
        if len(needle) >= MIN_INDEXED and "\x00" not in needle:
            have = yield Fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.search_index,))
            if have:
                found = yield Fetch(
                    f"SELECT rowid FROM {self.search_index} WHERE {self.search_index} MATCH ? LIMIT ?",
                    (fts_phrase(needle), CANDIDATES + 1),
                )
                if len(found) <= CANDIDATES:
                    ids = msgspec.json.encode([r[0] for r in found]).decode()
                    within = (f"{self.customers}.rowid IN (SELECT value FROM json_each(?))", [ids])
                    rows: Rows = yield Fetch(*self.customer_list(q, tier, limit, within))
                    return rows
        rows = yield Fetch(*self.customer_list(q, tier, limit))
        return rows

    def forget_search(self) -> Plan[None]:
        """After an erasure: FTS5 deletes by writing a tombstone in a newer segment, so the
        erased identities' trigrams stayed in the older ones until a merge; ``optimize`` merges
        every segment into one (and ``secure_delete`` zeroes the pages it frees)."""
        have = yield Fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.search_index,))
        if have:
            yield Execute(f"INSERT INTO {self.search_index} ({self.search_index}) VALUES ('optimize')")


def index_statements(suffix: str = "") -> list[str]:
    """Create the index of the customers table named with ``suffix``, fill it (one pass over
    the table: cheaper than a row at a time through a rebuild) and add its triggers."""
    u, f = "customers" + suffix, INDEX + suffix
    ins, dele, upd = (name + suffix for name in TRIGGERS)
    add = f"INSERT INTO {f} (rowid, search) VALUES (new.rowid, new.search)"
    remove = f"INSERT INTO {f} ({f}, rowid, search) VALUES ('delete', old.rowid, old.search)"
    return [
        f"CREATE VIRTUAL TABLE {f} USING fts5(search, content='', tokenize='trigram case_sensitive 1')",
        f"INSERT INTO {f} (rowid, search) SELECT rowid, search FROM {u}",
        f"CREATE TRIGGER {ins} AFTER INSERT ON {u} BEGIN {add}; END",
        f"CREATE TRIGGER {dele} AFTER DELETE ON {u} BEGIN {remove}; END",
        # An upsert names ``search`` in its SET whether or not it changed: WHEN keeps the
        # index untouched by the rewrites of a summary that only moved its activity.
        f"CREATE TRIGGER {upd} AFTER UPDATE OF search ON {u} WHEN old.search IS NOT new.search"
        f" BEGIN {remove}; {add}; END",
    ]


def ensure_index(suffix: str = "") -> Plan[bool]:
    """The index of an older file (or one a swap left without it), built now; whether it was.
    One that lacks a trigger is built again: it may have missed changes."""
    names = [INDEX + suffix, *(t + suffix for t in TRIGGERS)]
    found = yield Fetch(f"SELECT name FROM sqlite_master WHERE name IN ({', '.join('?' * len(names))})", names)
    if len(found) == len(names):
        return False
    yield from drop_index(suffix)
    for stmt in index_statements(suffix):
        yield Execute(stmt)
    return True


def drop_index(suffix: str = "") -> Plan[None]:
    for trigger in TRIGGERS:
        yield Execute(f"DROP TRIGGER IF EXISTS {trigger}{suffix}")
    yield Execute(f"DROP TABLE IF EXISTS {INDEX}{suffix}")


_fts_checked: dict[str, bool] = {}


def fts_available(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite has FTS5 and its trigram tokenizer (3.34+); said once per process
    when not: searches then scan, as before the index."""
    if "ok" not in _fts_checked:
        try:
            conn.execute("CREATE VIRTUAL TABLE temp.relaydesk_fts_probe USING fts5(x, tokenize='trigram')")
            conn.execute("DROP TABLE temp.relaydesk_fts_probe")
            _fts_checked["ok"] = True
        except sqlite3.OperationalError as err:
            log.warning(
                "timelines.search_unindexed",
                reason=f"SQLite {sqlite3.sqlite_version} has no FTS5 trigram tokenizer: {err}",
                effect="customer searches scan every customer",
            )
            _fts_checked["ok"] = False
    return _fts_checked["ok"]


def count_customers(conn: sqlite3.Connection, suffix: str = "") -> Any:
    return conn.execute(f"SELECT count(*) FROM customers{suffix}").fetchone()[0]
