"""The customer search's index (``customers(q=...)``), SQLite's half; PostgreSQL's is
``search_pg.py``.

What a search finds is fixed by the scan (``Sql.customer_list``): customers whose ``search``
column (``CustomerSummary.search_text``) holds ``search_form(q)``, newest activity first. An
index only narrows the rows that scan reads: the substring test stays in the statement, so an
index can make a search faster, never give other rows.

SQLite: an FTS5 table with the ``trigram`` tokenizer, contentless (``content=''``: it keeps no
copy of the text), kept by triggers that touch it only when a customer row is inserted or
deleted or its ``search`` value changes: the summary row is rewritten on nearly every event, its
search text rarely. A query of fewer than three characters has no trigram and is a scan; a
query that matches more than ``CANDIDATES`` customers is a scan too, in activity order, which
finds a common text's newest matches soon (the index would hand over every match to be sorted).

An FTS5 row is known by an integer, and a contentless table can hand back nothing else. It is
not the customers table's rowid: that table has no INTEGER PRIMARY KEY, so SQLite may renumber
its rows (``VACUUM`` may; a dump and restore does), and an index keyed by rowid then points at
other customers, whose rows the substring test drops: searches would miss customers, silently.
The integer is a key of the index's own, ``customers_trigram_keys (key INTEGER PRIMARY KEY,
customer_id UNIQUE)`` (a rowid alias: kept by ``VACUUM`` and by a dump), which the same triggers
write; a search reads the matching keys' customer ids, then those customers by their primary
key. (Giving the customers table an INTEGER PRIMARY KEY instead would mean copying the table in
an older file; the key table is built with the index, and an older file's rowid-keyed index is
dropped and built again at open, ``ensure_index``.)
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

INDEX = "customers_trigrams"
KEYS = "customers_trigram_keys"  # the index's own key of each customer (see above)
TRIGGERS = ("customers_trigrams_insert", "customers_trigrams_delete", "customers_trigrams_update")
# The rowid-keyed index of the release before (2026-12-07): names of its own, so that release,
# run again on a file this one opened (a rollback), finds its index missing and builds it beside
# this one (both kept by their triggers) instead of reading this one's keys as rowids and
# missing customers; this release drops it when it opens the file again.
LEGACY_INDEX = "customers_search"
LEGACY_TRIGGERS = ("customers_search_insert", "customers_search_delete", "customers_search_update")


def fts_phrase(needle: str) -> str:
    """``needle`` as one FTS5 string: its trigrams one after the other, i.e. the substring."""
    return '"' + needle.replace('"', '""') + '"'


class SqliteSql(Sql):
    """``Sql`` for the SQLite tables named with ``suffix``, searching through the index where
    the file has it (a read-only API on a file not yet upgraded has not)."""

    def __init__(self, suffix: str) -> None:
        super().__init__({name: name + suffix for name in TABLES})
        self.search_index = INDEX + suffix
        self.search_keys = KEYS + suffix

    def customer_search(self, q: str, tier: str | None, limit: int) -> Plan[Rows]:
        needle = search_form(q)
        # FTS5's query language cannot quote a NUL (the API refuses one: services.api.nul_refusal).
        if len(needle) >= MIN_INDEXED and "\x00" not in needle:
            # Both, or it is an older file's rowid-keyed index (not upgraded yet): a scan.
            have = yield Fetch(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
                (self.search_index, self.search_keys),
            )
            if have[0][0] == 2:
                found = yield Fetch(
                    f"SELECT k.customer_id FROM {self.search_index} CROSS JOIN {self.search_keys} k"
                    f" ON k.key = {self.search_index}.rowid WHERE {self.search_index} MATCH ? LIMIT ?",
                    (fts_phrase(needle), CANDIDATES + 1),
                )
                if len(found) <= CANDIDATES:
                    ids = msgspec.json.encode([r[0] for r in found]).decode()
                    within = (f"{self.customers}.customer_id IN (SELECT value FROM json_each(?))", [ids])
                    rows: Rows = yield Fetch(*self.customer_list(q, tier, limit, within))
                    return rows
        rows = yield Fetch(*self.customer_list(q, tier, limit))
        return rows

    def forget_search(self) -> Plan[None]:
        """After an erasure: FTS5 deletes by writing a tombstone in a newer segment, so the
        erased identities' trigrams stayed in the older ones until a merge; ``optimize`` merges
        every segment into one (and ``secure_delete`` zeroes the pages it frees). The key table
        holds customer ids only, and a deleted customer's key row goes with it (the trigger)."""
        have = yield Fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.search_index,))
        if have:
            yield Execute(f"INSERT INTO {self.search_index} ({self.search_index}) VALUES ('optimize')")


def index_statements(suffix: str = "") -> list[str]:
    """Create the index of the customers table named with ``suffix`` and its key table, fill
    them (one pass over the table each: cheaper than a row at a time through a rebuild) and
    add their triggers."""
    u, f, k = "customers" + suffix, INDEX + suffix, KEYS + suffix
    ins, dele, upd = (name + suffix for name in TRIGGERS)
    add = f"INSERT INTO {f} (rowid, search) SELECT key, new.search FROM {k} WHERE customer_id = new.customer_id"
    remove = (
        f"INSERT INTO {f} ({f}, rowid, search) SELECT 'delete', key, old.search FROM {k}"
        " WHERE customer_id = old.customer_id"
    )
    return [
        f"CREATE TABLE {k} (key INTEGER PRIMARY KEY, customer_id TEXT NOT NULL UNIQUE)",
        # Any distinct integers will do for keys: the rowids as they are now are, and with them
        # the index is filled in one pass over the table, in its order (a fill in key order
        # through a join on customer_id read the table all over: 46 s against 37 s, one run at
        # a million customers). Renumbering later moves rowids, not keys; a new key is max + 1.
        f"INSERT INTO {k} (key, customer_id) SELECT rowid, customer_id FROM {u}",
        f"CREATE VIRTUAL TABLE {f} USING fts5(search, content='', tokenize='trigram case_sensitive 1')",
        f"INSERT INTO {f} (rowid, search) SELECT rowid, search FROM {u}",
        f"CREATE TRIGGER {ins} AFTER INSERT ON {u}"
        f" BEGIN INSERT INTO {k} (customer_id) VALUES (new.customer_id); {add}; END",
        f"CREATE TRIGGER {dele} AFTER DELETE ON {u}"
        f" BEGIN {remove}; DELETE FROM {k} WHERE customer_id = old.customer_id; END",
        # An upsert names ``search`` in its SET whether or not it changed: WHEN keeps the
        # index untouched by the rewrites of a summary that only moved its activity. (Nothing
        # changes a customer id; were one changed, its key would follow it.)
        f"CREATE TRIGGER {upd} AFTER UPDATE OF search, customer_id ON {u}"
        " WHEN old.search IS NOT new.search OR old.customer_id IS NOT new.customer_id"
        f" BEGIN {remove}; UPDATE {k} SET customer_id = new.customer_id WHERE customer_id = old.customer_id"
        f" AND old.customer_id IS NOT new.customer_id; {add}; END",
    ]


def ensure_index(suffix: str = "") -> Plan[bool]:
    """The index of an older file (or one a swap left without it), built now; whether it was.
    One that lacks a trigger is built again: it may have missed changes; so is one without its
    key table (an older file's, keyed by the customers' rowids: see above)."""
    names = [INDEX + suffix, KEYS + suffix, *(t + suffix for t in TRIGGERS)]
    found = yield Fetch(f"SELECT name FROM sqlite_master WHERE name IN ({', '.join('?' * len(names))})", names)
    if len(found) == len(names):
        yield from drop_legacy_index(suffix)  # a rollback's, kept beside this one meanwhile
        return False
    yield from drop_index(suffix)
    for stmt in index_statements(suffix):
        yield Execute(stmt)
    return True


def drop_legacy_index(suffix: str = "") -> Plan[bool]:
    """Drop the rowid-keyed index of the release before (left by a rollback, or by an older
    file's upgrade); whether there was one. Its triggers would keep it, at a cost, for nobody."""
    found = yield Fetch("SELECT 1 FROM sqlite_master WHERE name = ?", (LEGACY_INDEX + suffix,))
    for trigger in LEGACY_TRIGGERS:
        yield Execute(f"DROP TRIGGER IF EXISTS {trigger}{suffix}")
    yield Execute(f"DROP TABLE IF EXISTS {LEGACY_INDEX}{suffix}")
    return bool(found)


def drop_index(suffix: str = "") -> Plan[None]:
    for trigger in TRIGGERS:
        yield Execute(f"DROP TRIGGER IF EXISTS {trigger}{suffix}")
    yield Execute(f"DROP TABLE IF EXISTS {INDEX}{suffix}")
    yield Execute(f"DROP TABLE IF EXISTS {KEYS}{suffix}")
    yield from drop_legacy_index(suffix)


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
