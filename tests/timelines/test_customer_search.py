"""The customer search's index (``services/timelines/search.py``, ``search_pg.py``): a search
reads it, and finds exactly what the scan of every customer finds (one abstract suite,
subclassed per backend below)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from events.model import (
    CustomerCreated,
    CustomerErased,
    CustomerProfileUpdated,
    CustomersMerged,
    IdentityLinked,
    IdentityUnlinked,
    LogEvent,
)
from services.timelines import TimelineStore
from services.timelines.rows import search_form
from services.timelines.search import INDEX
from services.timelines.steps import Fetch, Rows, Step, single
from tests.timelines.helpers import T0, Backend, Script, Seq, make_backend, new_id, pg_dsn

TIERS = (None, "gold", "platinum")


def corpus(tag: str) -> tuple[list[LogEvent], dict[str, str]]:
    """Customers whose search texts vary as the live ones do; ``tag`` keeps them apart from
    other tests' rows. Returns the events and the ids by role."""
    ids = {role: new_id(f"cu_{role}_") for role in ("ann", "german", "turkish", "dotless", "nfd", "crm", "moved")}
    ids |= {"merged": new_id("cu_merged_"), "survivor": new_id("cu_surv_"), "erased": new_id("cu_erased_")}
    at = iter(T0 + timedelta(minutes=i) for i in range(1000))
    events: list[LogEvent] = [
        CustomerCreated(at=next(at), customer_id=ids["ann"], identity=f"email:Ann.Lee.{tag}@Example.com"),
        IdentityLinked(at=next(at), customer_id=ids["ann"], identity=f"sms:+1555{tag[:6]}"),
        CustomerCreated(at=next(at), customer_id=ids["german"], identity=f"chat:user:Straße-{tag}"),
        CustomerCreated(at=next(at), customer_id=ids["turkish"], identity=f"chat:user:İstanbul-{tag}"),
        CustomerCreated(at=next(at), customer_id=ids["dotless"], identity=f"chat:user:ıslak-{tag}"),
        CustomerCreated(at=next(at), customer_id=ids["nfd"], identity=f"email:Jose\u0301.{tag}@example.com"),
        CustomerCreated(at=next(at), customer_id=ids["crm"], identity=f"email:crm.{tag}@example.org"),
        CustomerProfileUpdated(at=next(at), customer_id=ids["crm"], tier="gold", crm_id=f"SF-{tag}-100%_x"),
        # An address changed after creation: the old one unlinked, a new one linked; a CRM id
        # changed.
        CustomerCreated(at=next(at), customer_id=ids["moved"], identity=f"email:old.{tag}@example.net"),
        CustomerProfileUpdated(at=next(at), customer_id=ids["moved"], tier="platinum", crm_id=f"OLDCRM-{tag}"),
        IdentityLinked(at=next(at), customer_id=ids["moved"], identity=f"email:new.{tag}@example.net"),
        IdentityUnlinked(at=next(at), customer_id=ids["moved"], identity=f"email:old.{tag}@example.net"),
        CustomerProfileUpdated(at=next(at), customer_id=ids["moved"], tier="platinum", crm_id=f"NEWCRM-{tag}"),
        # A customer merged into another: found as itself by the store (the API answers its survivor).
        CustomerCreated(at=next(at), customer_id=ids["merged"], identity=f"email:twin.{tag}@example.com"),
        CustomerCreated(at=next(at), customer_id=ids["survivor"], identity=f"sms:+1666{tag[:6]}"),
        CustomersMerged(at=next(at), customer_id=ids["survivor"], merged_id=ids["merged"]),
        CustomerCreated(at=next(at), customer_id=ids["erased"], identity=f"email:gone.{tag}@example.com"),
        CustomerErased(at=next(at), customer_id=ids["erased"]),
    ]
    # Activity after creation (the summary row rewritten, its search text not): the order moves.
    s = Script(ids["ann"], new_id("cv"), clock=T0 + timedelta(hours=5))
    events += [s.opened(), s.message()]
    for i in range(12):  # more of the same text, in every tier, for the limit and the order
        cid = new_id(f"cu_many{i}_")
        events.append(CustomerCreated(at=next(at), customer_id=cid, identity=f"email:many{i}.{tag}@example.com"))
        tier = TIERS[i % 3]
        if tier is not None:
            events.append(CustomerProfileUpdated(at=next(at), customer_id=cid, tier=tier))
    return events, ids


def queries(tag: str, ids: dict[str, str]) -> list[str]:
    return [
        f"ann.lee.{tag}",
        f"ANN.LEE.{tag}@EXAMPLE",
        f"+1555{tag[:6]}",
        f"strasse-{tag}",
        f"STRASSE-{tag}",
        f"straße-{tag}",
        f"istanbul-{tag}",
        f"İSTANBUL-{tag}",
        f"islak-{tag}",
        f"ıslak-{tag}",
        f"josé.{tag}",
        f"JOSE\u0301.{tag}",
        f"sf-{tag}-100%_x",
        f"{tag}-100%",
        "100%_",
        f"old.{tag}",
        f"new.{tag}",
        f"oldcrm-{tag}",
        f"newcrm-{tag}",
        f"twin.{tag}",
        ids["merged"],
        ids["survivor"].upper(),
        f"gone.{tag}",
        "[erased]",
        f".{tag}@example.com",
        f"{tag}@example.com sms:",  # across two identities of one customer
        f"{tag}@example.com ",
        ids["ann"][:6],
        "ex",  # short: a scan
        "e",
        "ß",
        "é.",
        f"many1.{tag}",
        "nobody by this name",
    ]


class SearchContract:
    """Subclasses set ``backend_name`` and say how the backend shows what a statement reads."""

    backend_name: str

    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[Backend]:
        b = make_backend(self.backend_name, tmp_path)
        try:
            yield b
        finally:
            await b.close_all()

    @pytest.fixture
    async def ts(self, backend: Backend) -> TimelineStore:
        return await backend.open()

    async def scan(self, ts: TimelineStore, q: str, tier: str | None, limit: int) -> list[str]:
        """What the search found before the index: the scan statement, on its own."""
        rows: Rows = await ts._read(single(Fetch(*ts.sql.customer_list(q, tier, limit))))  # type: ignore[attr-defined]
        return [r[0] for r in rows]

    async def search(self, ts: TimelineStore, q: str, tier: str | None = None, limit: int = 100) -> list[str]:
        return [c.customer_id for c in await ts.customers(q=q, tier=tier, limit=limit)]

    async def statements(self, ts: TimelineStore, q: str, tier: str | None = None) -> list[Step]:
        """The statements a search of ``q`` runs, each run as it goes."""
        seen: list[Step] = []
        plan = ts.sql.customer_search(q, tier, 100)  # type: ignore[attr-defined]
        step = next(plan)
        try:
            while True:
                seen.append(step)
                step = plan.send(await ts._read(single(step)))  # type: ignore[attr-defined]
        except StopIteration:
            return seen

    async def reads(self, ts: TimelineStore, step: Step) -> str:
        """How the backend runs ``step`` (its query plan, as text). Per backend."""
        raise NotImplementedError

    async def index_version(self, ts: TimelineStore, customer_id: str) -> Any:
        """Something that changes whenever the index is written for ``customer_id``. Per backend."""
        raise NotImplementedError

    async def drop_the_index(self, backend: Backend, ts: TimelineStore) -> None:
        """Make the store as an older Relaydesk left it. Per backend."""
        raise NotImplementedError

    async def assert_same_as_scan(self, ts: TimelineStore, qs: list[str]) -> int:
        """Every query, tier and limit: the search answers what the scan answers; how many found any."""
        found = 0
        for q in qs:
            for tier in TIERS:
                for limit in (100, 3):
                    expected = await self.scan(ts, q, tier, limit)
                    assert await self.search(ts, q, tier, limit) == expected, (q, tier, limit)
                    found += bool(expected)
        return found

    # -- tests ----------------------------------------------------------------------

    async def test_the_index_finds_what_the_scan_finds(self, ts: TimelineStore) -> None:
        tag = new_id("t")
        events, ids = corpus(tag)
        await ts.apply(Seq()(events))
        qs = queries(tag, ids)
        assert await self.assert_same_as_scan(ts, qs) > 40
        # and what each query should find, spelled out for the ones that test folding and updates
        assert await self.search(ts, f"strasse-{tag}") == [ids["german"]]
        assert await self.search(ts, f"istanbul-{tag}") == [ids["turkish"]]
        assert await self.search(ts, f"islak-{tag}") == []
        assert await self.search(ts, f"JOSE\u0301.{tag}") == [ids["nfd"]]
        assert await self.search(ts, f"{tag}-100%") == [ids["crm"]]
        assert await self.search(ts, f"old.{tag}") == []
        assert await self.search(ts, f"oldcrm-{tag}") == []
        assert await self.search(ts, f"new.{tag}") == [ids["moved"]]
        assert await self.search(ts, f"newcrm-{tag}", tier="platinum") == [ids["moved"]]
        assert await self.search(ts, f"twin.{tag}") == [ids["merged"]]
        assert await self.search(ts, f"gone.{tag}") == []
        many = await self.search(ts, f".{tag}@example.com", limit=4)
        assert many[0] == ids["ann"] and len(many) == 4  # newest activity first
        for q in (f"strasse-{tag}", f"+1555{tag[:6]}", f"newcrm-{tag}"):
            assert any(search_form(q) in step.args[0] for step in await self.statements(ts, q) if step.args), q

    async def test_a_search_reads_the_index_not_every_customer(self, ts: TimelineStore) -> None:
        tag = new_id("t")
        events, _ = corpus(tag)
        await ts.apply(Seq()(events))
        assert await self.indexed(ts, f"ann.lee.{tag}", "gold")
        assert await self.indexed(ts, "nobody by this name")
        assert not await self.indexed(ts, "ex")  # fewer than three characters: no trigram, a scan

    async def indexed(self, ts: TimelineStore, q: str, tier: str | None = None) -> bool:
        """Whether a search of ``q`` goes through the index: the statements it runs, as the
        backend plans them."""
        steps = await self.statements(ts, q, tier)
        plans = [await self.reads(ts, s) for s in steps if "sqlite_master" not in s.sql and "to_regclass" not in s.sql]
        return self.uses_index(plans)

    def uses_index(self, plans: list[str]) -> bool:
        """The index read, and then only the customers it found. Per backend."""
        raise NotImplementedError

    async def test_a_common_text_is_a_scan(self, ts: TimelineStore) -> None:
        """More matches than ``CANDIDATES``: the index would hand every one over to be sorted;
        the scan finds the newest soon (SQLite: in activity order)."""
        from services.timelines import search

        tag = new_id("t")
        events, _ = corpus(tag)
        await ts.apply(Seq()(events))
        common = f".{tag}@example.com"
        old, search.CANDIDATES = search.CANDIDATES, 3
        try:
            assert not await self.indexed(ts, common)
            assert await self.search(ts, common) == await self.scan(ts, common, None, 100)
        finally:
            search.CANDIDATES = old
        assert await self.indexed(ts, common)

    async def test_the_index_is_written_only_when_the_search_text_changes(self, ts: TimelineStore) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        seq = Seq()
        await ts.apply(seq([s.created(), s.opened()]))
        before = await self.index_version(ts, s.customer)
        await ts.apply(seq([s.message("one"), s.message("two")]))  # activity: the row is rewritten
        await ts.apply(seq([CustomerProfileUpdated(at=T0, customer_id=s.customer, tier="gold")]))
        c = await ts.customer(s.customer)
        assert c is not None and c.tier == "gold" and c.last_activity_at is not None
        assert await self.index_version(ts, s.customer) == before
        await ts.apply(seq([IdentityLinked(at=T0, customer_id=s.customer, identity="email:x.y@example.com")]))
        assert await self.index_version(ts, s.customer) != before
        assert await self.search(ts, "x.y@example") == [s.customer]

    async def test_an_older_store_gets_the_index_when_opened(self, backend: Backend, ts: TimelineStore) -> None:
        tag = new_id("t")
        events, ids = corpus(tag)
        seq = Seq()
        await ts.apply(seq(events[:10]))
        await self.drop_the_index(backend, ts)
        await ts.apply(seq(events[10:]))  # written without the index, as an older Relaydesk did
        await ts.close()
        ts = await backend.open()
        assert await self.indexed(ts, f"new.{tag}")
        await self.assert_same_as_scan(ts, queries(tag, ids))
        reader = await backend.open(readonly=True)
        assert await self.search(reader, f"new.{tag}") == [ids["moved"]]

    async def test_a_rebuild_builds_the_index_once_at_the_swap(self, ts: TimelineStore) -> None:
        tag = new_id("t")
        events, ids = corpus(tag)
        await ts.apply(Seq()(events[:5]))
        fresh = await ts.begin_rebuild()
        await fresh.for_bulk_load()
        assert not await self.shadow_has_index(fresh)  # the bulk load writes no index row by row
        await fresh.apply(Seq()(events))
        assert not await self.shadow_has_index(fresh)
        await ts.swap_in(fresh)
        assert await self.indexed(ts, f"new.{tag}")
        await self.assert_same_as_scan(ts, queries(tag, ids))
        # and it is kept after the swap
        cid = new_id("cu")
        await ts.apply(Seq(next=10_000)([CustomerCreated(at=T0, customer_id=cid, identity=f"email:late.{tag}@x.io")]))
        assert await self.search(ts, f"late.{tag}") == [cid]

    async def shadow_has_index(self, fresh: TimelineStore) -> bool:
        raise NotImplementedError

    async def test_an_erased_address_leaves_the_index(self, ts: TimelineStore) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        seq = Seq()
        # no other text here has a ☃: its bytes stand in the index only for this customer
        created = CustomerCreated(at=T0, customer_id=s.customer, identity="email:☃☃☃secret@example.com")
        await ts.apply(seq([created]))
        assert await self.search(ts, "☃☃☃secret") == [s.customer]
        assert await self.index_holds(ts, "☃")
        await ts.apply(seq([CustomerErased(at=T0, customer_id=s.customer)]))
        assert await self.search(ts, "☃☃☃secret") == []
        assert not await self.index_holds(ts, "☃")
        assert await self.search(ts, "[erased]") == [s.customer]


class TestSqliteSearch(SearchContract):
    backend_name = "sqlite"

    async def reads(self, ts: TimelineStore, step: Step) -> str:
        rows = ts._conn.execute("EXPLAIN QUERY PLAN " + step.sql, step.args).fetchall()  # type: ignore[attr-defined]
        return " | ".join(str(r[3]) for r in rows)

    def uses_index(self, plans: list[str]) -> bool:
        # the customers read by their primary key, as the index found them (through its own
        # key table, by its rowid alias); the scan walks the activity index
        last = plans[-1]
        found = any(
            f"{INDEX} VIRTUAL TABLE" in plan and "SEARCH k USING INTEGER PRIMARY KEY (rowid=?)" in plan
            for plan in plans[:-1]
        )
        by_id = "SEARCH customers USING INDEX sqlite_autoindex_customers_1 (customer_id=?)"
        return found and by_id in last and "SCAN customers" not in last

    async def index_version(self, ts: TimelineStore, customer_id: str) -> Any:
        conn = ts._conn  # type: ignore[attr-defined]
        return conn.execute(f"SELECT group_concat(id || ':' || hex(block)) FROM {INDEX}_data").fetchone()

    async def index_holds(self, ts: TimelineStore, text: str) -> bool:
        """Whether ``text`` is anywhere in the index's pages: FTS5 deletes by
        writing the term again with a tombstone, and both stay until the segments merge."""
        conn = ts._conn  # type: ignore[attr-defined]
        pages = [r[0] for r in conn.execute(f"SELECT block FROM {INDEX}_data") if r[0]]
        pages += [r[0] for r in conn.execute(f"SELECT term FROM {INDEX}_idx") if r[0]]
        return any(text.encode() in bytes(page) for page in pages)

    async def drop_the_index(self, backend: Backend, ts: TimelineStore) -> None:
        from services.timelines.search import drop_index
        from services.timelines.steps import run

        conn = ts._conn  # type: ignore[attr-defined]
        run(drop_index(), lambda step: conn.execute(step.sql, step.args).fetchall())

    async def shadow_has_index(self, fresh: TimelineStore) -> bool:
        conn = fresh._conn  # type: ignore[attr-defined]
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE (type = 'trigger' AND tbl_name = 'customers__next')"
            " OR name LIKE 'customers!_search%!_!_next%' ESCAPE '!'"  # the index and its key table
        ).fetchall()
        return bool(rows)


class TestPostgresSearch(SearchContract):
    """Skips, saying why, when no PostgreSQL answers (``make_backend``)."""

    backend_name = "postgres"

    async def reads(self, ts: TimelineStore, step: Step) -> str:
        import psycopg

        async with await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True) as conn:
            # The planner reads a table of a few rows whole whatever its indexes: ask whether
            # the statement can use the trigram index at all (at size it picks it itself:
            # ``test_at_size_the_planner_picks_the_index_itself``).
            await conn.execute("SET enable_seqscan = off")
            await conn.execute("SET enable_indexscan = off")
            cur = await conn.execute("EXPLAIN " + step.sql, step.args)  # type: ignore[arg-type]
            return " | ".join(str(r[0]) for r in await cur.fetchall())

    def uses_index(self, plans: list[str]) -> bool:
        found = any("customer_search_trgm" in plan for plan in plans[:-1])
        return found and "Index Cond: (customer_id = ANY" in plans[-1]

    async def index_version(self, ts: TimelineStore, customer_id: str) -> Any:
        return await self.pg(ts, "SELECT xmin::text FROM {s}.customer_search WHERE customer_id = %s", customer_id)

    async def index_holds(self, ts: TimelineStore, text: str) -> bool:
        return bool(await self.pg(ts, "SELECT count(*) FROM {s}.customer_search WHERE search LIKE %s", f"%{text}%"))

    async def pg(self, ts: TimelineStore, sql: str, *args: Any) -> Any:
        import psycopg

        async with await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True) as conn:
            cur = await conn.execute(sql.format(s=f'"{ts.schema}"'), args)  # type: ignore[attr-defined]
            if cur.description is None:
                return None
            row = await cur.fetchone()
            return None if row is None else row[0]

    async def drop_the_index(self, backend: Backend, ts: TimelineStore) -> None:
        await self.pg(ts, "DROP TABLE {s}.customer_search")
        for trigger in ("customer_search_insert", "customer_search_delete", "customer_search_update"):
            await self.pg(ts, f"DROP TRIGGER {trigger} ON {{s}}.customers")

    async def shadow_has_index(self, fresh: TimelineStore) -> bool:
        return bool(await self.pg(fresh, "SELECT to_regclass('{s}.customer_search') IS NOT NULL"))

    async def test_at_size_the_planner_picks_the_index_itself(self, ts: TimelineStore) -> None:
        """20,000 customers, analyzed: a rare text reads the trigram index without being told."""
        import psycopg

        async with await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True) as conn:
            s = f'"{ts.schema}"'  # type: ignore[attr-defined]
            await conn.execute(
                f"INSERT INTO {s}.customers (customer_id, identities, flags, last_activity_at, conversation_count,"
                " last_seq, search) SELECT 'cu_' || i, '[]', '[]', now() - i * interval '1 minute', 0, i,"
                " 'cu_' || i || ' email:person' || i || '@example.com' FROM generate_series(1, 20000) i"
            )
            await conn.execute(f"ANALYZE {s}.customers")
            await conn.execute(f"ANALYZE {s}.customer_search")
        plans = []
        for step in (await self.statements(ts, "person12345@"))[1:]:
            async with await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True) as conn:
                cur = await conn.execute("EXPLAIN " + step.sql, step.args)  # type: ignore[arg-type]
                plans.append(" | ".join(str(r[0]) for r in await cur.fetchall()))
        assert self.uses_index(plans), plans
        assert await self.search(ts, "person12345@") == ["cu_12345"]
        assert await self.search(ts, "person1234") == await self.scan(ts, "person1234", None, 100)

    async def test_without_pg_trgm_the_search_scans_and_says_why_once(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from services.timelines import search_pg

        monkeypatch.setattr(search_pg, "EXTENSION", "pg_trgm_not_installed_here")
        monkeypatch.setattr(search_pg, "_warned", set())
        with structlog.testing.capture_logs() as logs:
            ts = await backend.open()
            await backend.open(readonly=True)
        warned = [x for x in logs if x["event"] == "timelines.search_unindexed"]
        assert len(warned) == 1 and "pg_trgm_not_installed_here" in warned[0]["reason"], logs
        tag = new_id("t")
        events, ids = corpus(tag)
        await ts.apply(Seq()(events))
        assert not await self.indexed(ts, f"new.{tag}")
        await self.assert_same_as_scan(ts, queries(tag, ids)[:8])
        assert await self.search(ts, f"new.{tag}") == [ids["moved"]]
