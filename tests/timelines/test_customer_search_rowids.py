"""SQLite's customer search index (``services/timelines/search.py``) when the customers
table's rowids change. That table has no INTEGER PRIMARY KEY, so SQLite may renumber its rows
(``VACUUM`` may; a dump and restore does): an index keyed by those rowids then points at other
customers, and a search silently misses the right ones. Each test renumbers the rows and then
looks for every customer."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.model import CustomerCreated, IdentityLinked
from services.timelines import TimelineStore
from services.timelines.search import INDEX, KEYS, drop_index
from services.timelines.steps import run
from tests.timelines.helpers import T0, Backend, Seq, make_backend, new_id
from tests.timelines.test_customer_search import corpus, queries

# The index as Relaydesk laid it down before it had a key table: keyed by the customers' rowids.
ROWID_KEYED = [
    "CREATE VIRTUAL TABLE customers_search USING fts5(search, content='', tokenize='trigram case_sensitive 1')",
    "INSERT INTO customers_search (rowid, search) SELECT rowid, search FROM customers",
    "CREATE TRIGGER customers_search_insert AFTER INSERT ON customers"
    " BEGIN INSERT INTO customers_search (rowid, search) VALUES (new.rowid, new.search); END",
    "CREATE TRIGGER customers_search_delete AFTER DELETE ON customers BEGIN INSERT INTO customers_search"
    " (customers_search, rowid, search) VALUES ('delete', old.rowid, old.search); END",
    "CREATE TRIGGER customers_search_update AFTER UPDATE OF search ON customers"
    " WHEN old.search IS NOT new.search BEGIN INSERT INTO customers_search (customers_search, rowid, search)"
    " VALUES ('delete', old.rowid, old.search); INSERT INTO customers_search (rowid, search)"
    " VALUES (new.rowid, new.search); END",
]


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    b = make_backend("sqlite", tmp_path)
    try:
        yield b
    finally:
        await b.close_all()


def conn_of(ts: TimelineStore) -> sqlite3.Connection:
    conn: sqlite3.Connection = ts._conn  # type: ignore[attr-defined]
    return conn


def renumber(ts: TimelineStore) -> None:
    """Move every customer row to another rowid, as a ``VACUUM`` may: no trigger sees it
    (the triggers are on ``search``, not on the rowid)."""
    conn = conn_of(ts)
    before = dict(conn.execute("SELECT customer_id, rowid FROM customers"))
    conn.execute("UPDATE customers SET rowid = 1000000 - rowid")
    after = dict(conn.execute("SELECT customer_id, rowid FROM customers"))
    assert len(before) > 1 and all(after[c] != before[c] for c in before)


async def search(ts: TimelineStore, q: str, tier: str | None = None, limit: int = 100) -> list[str]:
    return [c.customer_id for c in await ts.customers(q=q, tier=tier, limit=limit)]


async def missed(ts: TimelineStore) -> list[str]:
    """The customers a search of their own id does not find (the id is in the search text)."""
    ids = [r[0] for r in conn_of(ts).execute("SELECT customer_id FROM customers")]
    assert len(ids) > 10
    return [cid for cid in ids if cid not in await search(ts, cid)]


async def assert_same_as_scan(ts: TimelineStore, qs: list[str]) -> None:
    for q in qs:
        for tier in (None, "gold", "platinum"):
            scan = [r[0] for r in conn_of(ts).execute(*ts.sql.customer_list(q, tier, 100))]  # type: ignore[attr-defined]
            assert await search(ts, q, tier) == scan, (q, tier)


def keys(ts: TimelineStore) -> list[str]:
    return sorted(r[0] for r in conn_of(ts).execute(f"SELECT customer_id FROM {KEYS}"))


def customer_ids(ts: TimelineStore) -> list[str]:
    return sorted(r[0] for r in conn_of(ts).execute("SELECT customer_id FROM customers"))


async def test_customers_moved_to_other_rowids_are_all_found(backend: Backend) -> None:
    ts = await backend.open()
    tag = new_id("t")
    events, ids = corpus(tag)
    seq = Seq()
    await ts.apply(seq(events))
    assert await missed(ts) == []
    renumber(ts)
    assert await missed(ts) == []
    await assert_same_as_scan(ts, queries(tag, ids))
    # and the index is kept right after it: a text changed, a customer added, one deleted
    late = new_id("cu_late_")
    await ts.apply(
        seq(
            [
                IdentityLinked(at=T0, customer_id=ids["german"], identity=f"email:moved.{tag}@example.de"),
                CustomerCreated(at=T0, customer_id=late, identity=f"email:late.{tag}@example.com"),
            ]
        )
    )
    await ts.replace_customer(ids["crm"], [], through=10**9)  # deleted
    assert await search(ts, f"moved.{tag}") == [ids["german"]]
    assert await search(ts, f"late.{tag}") == [late]
    assert await search(ts, f"crm.{tag}") == []
    assert await missed(ts) == []
    await assert_same_as_scan(ts, queries(tag, ids))
    assert keys(ts) == customer_ids(ts)  # the deleted customer's key went with it


async def test_a_dump_restored_into_a_new_file_finds_everyone(backend: Backend, tmp_path: Path) -> None:
    """``iterdump`` (as ``sqlite3 .dump``) writes the customers without their rowids: restored,
    they are numbered from 1 again, closing the gaps the deleted customers left."""
    ts = await backend.open()
    tag = new_id("t")
    events, ids = corpus(tag)
    await ts.apply(Seq()(events))
    gone = [ids["ann"], ids["german"], ids["turkish"]]  # among the first rows written
    for cid in gone:
        await ts.replace_customer(cid, [], through=10**9)
    rowids = dict(conn_of(ts).execute("SELECT customer_id, rowid FROM customers"))
    # Python 3.11's iterdump writes a row into the FTS5 table itself too, which no restore can
    # run (``sqlite3 .dump`` does not): left out, the rest is what the CLI writes.
    dump = [line for line in conn_of(ts).iterdump() if not line.startswith(f'INSERT INTO "{INDEX}" ')]
    await ts.close()

    restored = Backend("sqlite", str(tmp_path / "restored.db"))
    with sqlite3.connect(restored.target) as conn:
        conn.executescript("\n".join(dump))
    conn.close()
    try:
        ts = await restored.open()
        moved = [
            c for c, rowid in conn_of(ts).execute("SELECT customer_id, rowid FROM customers") if rowids[c] != rowid
        ]
        assert len(moved) > 10
        assert await missed(ts) == []
        await assert_same_as_scan(ts, queries(tag, ids))
        assert await search(ts, f"new.{tag}") == [ids["moved"]]
        assert keys(ts) == customer_ids(ts) and not set(gone) & set(keys(ts))  # the deleted ones' keys went
    finally:
        await restored.close_all()


async def test_a_store_with_the_rowid_keyed_index_gets_the_keyed_one_when_opened(backend: Backend) -> None:
    ts = await backend.open()
    tag = new_id("t")
    events, ids = corpus(tag)
    seq = Seq()
    await ts.apply(seq(events[:10]))
    conn = conn_of(ts)
    run(drop_index(), lambda step: conn.execute(step.sql, step.args).fetchall())  # type: ignore[union-attr]
    for stmt in ROWID_KEYED:
        conn.execute(stmt)
    await ts.apply(seq(events[10:]))  # written through the old triggers
    # This Relaydesk reading a file not upgraded yet (a read-only API) does not trust the old
    # index: it scans, and finds everyone whatever the rowids.
    renumber(ts)
    assert await missed(ts) == []
    await ts.close()

    ts = await backend.open()  # upgraded: the index built again, keyed by customer id
    assert keys(ts) == customer_ids(ts)
    assert await missed(ts) == []
    await assert_same_as_scan(ts, queries(tag, ids))
    renumber(ts)
    assert await missed(ts) == []
    await assert_same_as_scan(ts, queries(tag, ids))
    reader = await backend.open(readonly=True)
    assert await search(reader, f"new.{tag}") == [ids["moved"]]


async def test_a_rollback_to_the_rowid_keyed_release_still_finds_everyone(backend: Backend) -> None:
    """The release before laid its index down under the names ``customers_search*``; had this
    one kept them, that release, run again on a file this one opened (a rollback), would have
    found "its" index complete and read this one's keys as rowids, missing customers. Under
    names of their own it finds its index missing and builds it beside this one; both are kept
    by their triggers; this release drops the old one when it opens the file again."""
    ts = await backend.open()
    tag = new_id("t")
    events, ids = corpus(tag)
    seq = Seq()
    await ts.apply(seq(events[:10]))
    conn = conn_of(ts)
    # The release before opens the file: its index is missing (not this one's names), it builds it.
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'customers_search'").fetchall()
    for stmt in ROWID_KEYED:
        conn.execute(stmt)
    await ts.apply(seq(events[10:]))  # written while rolled back: both indexes' triggers fire
    # What the release before searches by (its index, keyed by rowid) holds every customer.
    for customer_id in customer_ids(ts):
        (search_text,) = conn.execute("SELECT search FROM customers WHERE customer_id = ?", (customer_id,)).fetchone()
        phrase = '"' + search_text[:40].replace('"', '""') + '"'
        old = conn.execute("SELECT rowid FROM customers_search WHERE customers_search MATCH ?", (phrase,)).fetchall()
        rowid = conn.execute("SELECT rowid FROM customers WHERE customer_id = ?", (customer_id,)).fetchone()[0]
        assert rowid in {r[0] for r in old}, customer_id
    await ts.close()

    ts = await backend.open()  # this release again: its index kept up, the old one dropped
    assert await missed(ts) == []
    await assert_same_as_scan(ts, queries(tag, ids))
    names = {r[0] for r in conn_of(ts).execute("SELECT name FROM sqlite_master")}
    assert not {n for n in names if n.startswith("customers_search")}, names
