"""The SQL both backends run, written once: ``Sql`` holds it for one copy of the tables.

Text is the same for SQLite and PostgreSQL but for a few dialect words, which a backend's
subclass sets: the placeholder, how a list of ids is matched, the substring function, and
PostgreSQL's row locks (``FOR UPDATE``) and ``NULLS LAST``. The checkpoint steps of a write
transaction differ more (PostgreSQL locks the key's row first) and are methods to override.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.timelines.redact import BODY_KINDS, ERASED, EXPIRED
from services.timelines.rowmap import (
    CUSTOMER_COLUMNS,
    ENTRY_COLUMNS,
    FOLD_SUMMARY_COLUMNS,
    LINK_COLUMNS,
    SUMMARY_COLUMNS,
    column_names,
)
from services.timelines.rows import search_form
from services.timelines.steps import Execute, Fetch, Plan, Rows, Step
from services.timelines.store import DEFAULT_KEY

TABLES = ("timeline", "conversations", "checkpoints", "customers", "meta", "customer_links", "erasures")
# The erasure register (``rows.ErasureRecord``): never refolded away, carried over by a swap.
ERASURE_COLUMNS = "customer_id, seq, at, reason, merged_ids"
SHADOW = "__next"
"""Suffix of the shadow copy a rebuild fills (SQLite: of each table; PostgreSQL: of the schema)."""


class Sql:
    """The statements for one copy of the tables (``names``: logical table name -> SQL name)."""

    param = "?"
    text_param = "?"  # a parameter whose type the statement does not give away
    contains = "instr"  # (haystack, needle) -> position, 0 if absent
    nulls_last = ""  # after DESC, where NULLs do not already sort last
    lock = ""  # row locks on the summaries a write transaction reads
    max_ids = 500  # ids per IN list

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = dict(names)
        self.timeline = names["timeline"]
        self.conversations = names["conversations"]
        self.checkpoints = names["checkpoints"]
        self.customers = names["customers"]
        self.meta = names["meta"]
        self.links = names["customer_links"]
        self.erasures = names["erasures"]
        p = self.param
        # Every customer whose history shows on a customer's timeline: itself and whoever was
        # merged into it, directly or through others (UNION, not UNION ALL: cycles end).
        self.family = (
            f"WITH RECURSIVE family(id) AS (SELECT {self.text_param} UNION SELECT l.merged_id FROM {self.links} l"
            " JOIN family f ON l.survivor_id = f.id) "
        )
        self.insert_entry = (
            f"INSERT INTO {self.timeline} ({ENTRY_COLUMNS}) VALUES ({self.params(ENTRY_COLUMNS)})"
            " ON CONFLICT (customer_id, seq) DO NOTHING"
        )
        self.upsert_summary = self._upsert(self.conversations, FOLD_SUMMARY_COLUMNS)
        self.upsert_customer = self._upsert(self.customers, CUSTOMER_COLUMNS)
        self.upsert_link = (
            f"INSERT INTO {self.links} AS x ({LINK_COLUMNS}) VALUES ({self.params(LINK_COLUMNS)})"
            " ON CONFLICT (merged_id) DO UPDATE SET survivor_id = excluded.survivor_id, seq = excluded.seq"
            " WHERE excluded.seq > x.seq"
        )
        # The latest CustomerErased folded for a customer stands (one a log holds at most; after a
        # restore and a new erasure, the new one, at whatever sequence the restored log gave it).
        self.upsert_erasure = self._upsert(self.erasures, ERASURE_COLUMNS)
        self.select_erasures = f"SELECT {ERASURE_COLUMNS} FROM {self.erasures} ORDER BY customer_id"
        self.select_checkpoint = f"SELECT seq FROM {self.checkpoints} WHERE key = {p}"
        self.select_checkpoints = f"SELECT key, seq FROM {self.checkpoints}"
        self.select_last_entry = f"SELECT seq, customer_id FROM {self.timeline} ORDER BY seq DESC LIMIT 1"
        self.select_fold_version = f"SELECT value FROM {self.meta} WHERE key = 'fold_version'"
        self.insert_fold_version = (
            f"INSERT INTO {self.meta} (key, value) VALUES ('fold_version', {p}) ON CONFLICT DO NOTHING"
        )

    def params(self, columns: str) -> str:
        return ", ".join([self.param] * len(column_names(columns)))

    def _upsert(self, table: str, columns: str) -> str:
        key, *rest = column_names(columns)
        return (
            f"INSERT INTO {table} ({columns}) VALUES ({self.params(columns)})"
            f" ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in rest)
        )

    def in_ids(self, column: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
        """A condition that ``column`` is one of ``ids``, and its arguments."""
        return f"{column} IN ({', '.join([self.param] * len(ids))})", list(ids)

    # -- write transactions ---------------------------------------------------------------

    def lock_checkpoint(self, key: str) -> Plan[int]:
        """The checkpoint of ``key``, first thing in a write transaction."""
        rows = yield Fetch(self.select_checkpoint, (key,))
        return int(rows[0][0]) if rows else 0

    def set_checkpoint(self, key: str, seq: int) -> Step:
        return Execute(
            f"INSERT INTO {self.checkpoints} (key, seq) VALUES ({self.param}, {self.param})"
            " ON CONFLICT (key) DO UPDATE SET seq = excluded.seq",
            (key, seq),
        )

    def highest_checkpoint(self) -> Plan[int]:
        """The highest checkpoint of any key, first thing in a one-customer rebuild."""
        rows = yield Fetch(f"SELECT COALESCE(MAX(seq), 0) FROM {self.checkpoints}")
        return int(rows[0][0])

    def select_by(self, table: str, columns: str, ids: Sequence[str]) -> list[Fetch]:
        """The rows of ``table`` whose key (its first column) is one of ``ids``, for update."""
        key = column_names(columns)[0]
        out: list[Fetch] = []
        for start in range(0, len(ids), self.max_ids):
            where, args = self.in_ids(key, ids[start : start + self.max_ids])
            out.append(Fetch(f"SELECT {columns} FROM {table} WHERE {where} ORDER BY {key}{self.lock}", args))
        return out

    def select_entries(self, customer_id: str) -> Fetch:
        """Every timeline row of one customer (to redact them)."""
        return Fetch(f"SELECT {ENTRY_COLUMNS} FROM {self.timeline} WHERE customer_id = {self.param}", (customer_id,))

    def select_customer(self, customer_id: str) -> Fetch:
        return Fetch(
            f"SELECT {CUSTOMER_COLUMNS} FROM {self.customers} WHERE customer_id = {self.param}", (customer_id,)
        )

    @property
    def redact_entry(self) -> str:
        """Overwrite the personal parts of one timeline row: channel, text, detail (by key)."""
        p = self.param
        return (
            f"UPDATE {self.timeline} SET channel = {p}, text = {p}, detail = {p} WHERE customer_id = {p} AND seq = {p}"
        )

    def expire_bodies(self, before: Any) -> Fetch:
        """Message bodies of entries before ``before`` (as the backend stores a time) read
        ``EXPIRED``; an erased or empty one stays as it is. Returns the sequences it changed."""
        p = self.param
        kinds = ", ".join(f"'{kind}'" for kind in BODY_KINDS)
        return Fetch(
            f"UPDATE {self.timeline} SET text = {p} WHERE kind IN ({kinds}) AND at < {p}"
            f" AND text IS NOT NULL AND text NOT IN ('', {p}, {p}) RETURNING seq",
            (EXPIRED, before, EXPIRED, ERASED),
        )

    def delete_customer(self, customer_id: str) -> list[Step]:
        """Every row of one customer (and the links that merge others into it)."""
        p = self.param
        return [
            Execute(f"DELETE FROM {self.timeline} WHERE customer_id = {p}", (customer_id,)),
            Execute(f"DELETE FROM {self.conversations} WHERE customer_id = {p}", (customer_id,)),
            Execute(f"DELETE FROM {self.customers} WHERE customer_id = {p}", (customer_id,)),
            Execute(f"DELETE FROM {self.links} WHERE survivor_id = {p}", (customer_id,)),
        ]

    # -- reading ----------------------------------------------------------------------------

    def timeline_page(
        self, family: Sequence[str], after: int, limit: int, channel: str | None
    ) -> tuple[str, list[Any]]:
        p = self.param
        where, args = self.in_ids("customer_id", family)
        sql = f"SELECT {ENTRY_COLUMNS} FROM {self.timeline} WHERE {where} AND seq > {p}"
        args.append(after)
        if channel is not None:
            sql += f" AND channel = {p}"
            args.append(channel)
        args.append(max(0, limit))
        return sql + f" ORDER BY seq LIMIT {p}", args

    def select_conversation(self) -> str:
        return f"SELECT {SUMMARY_COLUMNS} FROM {self.conversations} WHERE conversation_id = {self.param}"

    def conversation_list(
        self, status: str | None, agent_id: str | None, customer_id: str | None, limit: int
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        prefix = ""
        if customer_id is not None:
            prefix = self.family
            args.append(customer_id)
            where.append("customer_id IN (SELECT id FROM family)")
        for column, value in (("status", status), ("agent_id", agent_id)):
            if value is not None:
                where.append(f"{column} = {self.param}")
                args.append(value)
        sql = f"{prefix}SELECT {SUMMARY_COLUMNS} FROM {self.conversations}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        args.append(max(0, limit))
        return sql + f" ORDER BY last_activity_at DESC, conversation_id LIMIT {self.param}", args

    def resolved_list(self, agent_id: str | None, after: tuple[Any, str] | None, limit: int) -> tuple[str, list[Any]]:
        """Resolved conversations, newest resolution first, after ``after`` (``resolved_at`` as
        the backend stores a time, and the id) in that order: a range of the index on
        (``status``, ``resolved_at``, ``conversation_id``), or with an agent of the partial one on
        (``agent_id``, ``resolved_at``, ``conversation_id``) of the resolved rows (``status =
        'resolved'`` is written out, not a parameter, so SQLite can use it)."""
        p = self.param
        where = ["status = 'resolved'"]
        args: list[Any] = []
        if agent_id is not None:
            where.append(f"agent_id = {p}")
            args.append(agent_id)
        if after is not None:
            where.append(f"(resolved_at, conversation_id) < ({p}, {self.text_param})")
            args += [after[0], after[1]]
        args.append(max(0, limit))
        return (
            f"SELECT {SUMMARY_COLUMNS} FROM {self.conversations} WHERE {' AND '.join(where)}"
            f" ORDER BY resolved_at DESC, conversation_id DESC LIMIT {p}",
            args,
        )

    def customer_family(self, customer_id: str) -> list[Fetch]:
        """One customer's row, the rows of the customers merged into it, their ids, and the
        customer it was merged into."""
        p = self.param
        return [
            Fetch(f"SELECT {CUSTOMER_COLUMNS} FROM {self.customers} WHERE customer_id = {p}", (customer_id,)),
            Fetch(
                f"{self.family}SELECT {CUSTOMER_COLUMNS} FROM {self.customers}"
                f" WHERE customer_id IN (SELECT id FROM family) AND customer_id != {p}",
                (customer_id, customer_id),
            ),
            Fetch(f"{self.family}SELECT id FROM family WHERE id != {p}", (customer_id, customer_id)),
            Fetch(f"SELECT survivor_id FROM {self.links} WHERE merged_id = {p}", (customer_id,)),
        ]

    def customer_list(
        self, q: str | None, tier: str | None, limit: int, within: tuple[str, list[Any]] | None = None
    ) -> tuple[str, list[Any]]:
        """The customers whose search text holds ``q`` (``search_form``), of ``tier``, newest
        activity first. ``within``: a condition (and its arguments) that narrows the rows to
        read first, from a search index (``search.py``); the substring test stays, so the rows
        are those of the scan whatever the index answers."""
        where: list[str] = []
        args: list[Any] = []
        if within is not None:
            where.append(within[0])
            args += within[1]
        if q:
            where.append(f"{self.contains}(search, {self.param}) > 0")
            args.append(search_form(q))
        if tier is not None:
            where.append(f"tier = {self.param}")
            args.append(tier)
        sql = (
            f"SELECT {CUSTOMER_COLUMNS}, survivor_id FROM {self.customers}"
            f" LEFT JOIN {self.links} ON merged_id = customer_id"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        args.append(max(0, limit))
        return sql + f" ORDER BY last_activity_at DESC{self.nulls_last}, customer_id LIMIT {self.param}", args

    def customer_search(self, q: str, tier: str | None, limit: int) -> Plan[Rows]:
        """``customer_list`` with ``q``: a scan here; a backend with a search index overrides it."""
        rows: Rows = yield Fetch(*self.customer_list(q, tier, limit))
        return rows

    def forget_search(self) -> Plan[None]:
        """In an erasure's transaction: make a search index let go of the old text (none here)."""
        yield from ()

    def dump(self) -> dict[str, str]:
        return {
            "timeline": f"SELECT {ENTRY_COLUMNS} FROM {self.timeline} ORDER BY customer_id, seq",
            "conversations": f"SELECT {SUMMARY_COLUMNS} FROM {self.conversations} ORDER BY conversation_id",
            "customers": f"SELECT {CUSTOMER_COLUMNS} FROM {self.customers} ORDER BY customer_id",
            "customer_links": f"SELECT * FROM {self.links} ORDER BY merged_id",
        }

    # -- swap -------------------------------------------------------------------------------

    def carry_erasures(self, fresh: Sql) -> Step:
        """In the swap transaction: every erasure this (live) copy registered that ``fresh``
        has not folded itself goes over to it. The register is what outlives a restore of NATS
        from an older backup; the fresh copy's own rows (the log as it is now) win."""
        return Execute(
            f"INSERT INTO {fresh.erasures} ({ERASURE_COLUMNS}) SELECT {ERASURE_COLUMNS} FROM {self.erasures}"
            " WHERE true ON CONFLICT (customer_id) DO NOTHING"
        )

    def carry_checkpoints(self, fresh: Sql) -> Plan[int]:
        """In the swap transaction: give ``fresh`` (the shadow copy) every checkpoint key of
        this (live) copy, all at the fresh copy's checkpoint, and return that checkpoint."""
        p = self.param
        rows = yield Fetch(fresh.select_checkpoint, (DEFAULT_KEY,))
        seq = int(rows[0][0]) if rows else 0
        yield Execute(
            f"INSERT INTO {fresh.checkpoints} (key, seq) SELECT key, {p} FROM {self.checkpoints} WHERE true"
            " ON CONFLICT (key) DO UPDATE SET seq = excluded.seq",
            (seq,),
        )
        # Partitioned projectors run here: keep only their keys, or a stale DEFAULT_KEY would look
        # like a projector that fell behind.
        yield Execute(
            f"DELETE FROM {fresh.checkpoints} WHERE key = {p} AND EXISTS (SELECT 1 FROM {self.checkpoints})"
            f" AND NOT EXISTS (SELECT 1 FROM {self.checkpoints} WHERE key = {p})",
            (DEFAULT_KEY, DEFAULT_KEY),
        )
        return seq
