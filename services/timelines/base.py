"""What both backends do, written once: ``PlannedStore`` implements ``TimelineStore`` (but for
opening, closing, rebuild and swap) as plans (see ``steps``) over the backend's ``Sql`` and
``RowCodec``. A backend says how a plan runs: ``_write`` in one write transaction, ``_read``
without one.

Exactly once in effect: ``apply`` reads (and, where the backend locks, locks) the checkpoint,
skips the events at or below it, writes the rows of the rest and moves the checkpoint, all in
one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any, TypeVar

import msgspec
import structlog

from events.model import CustomerErased, CustomerEvent
from events.skips import count_skip
from events.stored import StoredEvent
from services.timelines.batch import fold_batch
from services.timelines.queries import Sql
from services.timelines.redact import redact_customer, redact_entry
from services.timelines.rowmap import CUSTOMER_COLUMNS, FOLD_SUMMARY_COLUMNS, RowCodec
from services.timelines.rows import ConversationSummary, CustomerSummary, ErasureRecord, TimelineEntry
from services.timelines.steps import Execute, ExecuteMany, Fetch, Plan, Rows, Step, single
from services.timelines.store import DEFAULT_KEY, CheckpointMismatch, FaultHook, ReadOnlyStore
from services.timelines.summaries import with_family

T = TypeVar("T")
K = TypeVar("K")
log = structlog.get_logger("relaydesk.timelines")


_SEQ = attrgetter("seq")
_ENTRY_KEY = attrgetter("customer_id", "seq")


def by_seq(events: Sequence[StoredEvent], *, after: int = 0, through: int | None = None) -> list[StoredEvent]:
    """The events with ``after < seq <= through``, in sequence order."""
    if through is None:
        kept = [e for e in events if e.seq > after]
    else:
        kept = [e for e in events if after < e.seq <= through]
    kept.sort(key=_SEQ)
    return kept


def touched(events: Sequence[StoredEvent]) -> tuple[list[str], list[str]]:
    """The conversations and customers whose summaries a batch may change (sorted: rows are
    locked in the same order by every writer)."""
    conversations = {cid for e in events if isinstance(cid := getattr(e.event, "conversation_id", None), str)}
    customers = {e.event.customer_id for e in events if isinstance(e.event, CustomerEvent)}
    # An erasure redacts the customers merged into the erased one as well.
    customers.update(m for e in events if isinstance(e.event, CustomerErased) for m in e.event.merged_ids)
    return sorted(conversations), sorted(customers)


def fetch_all(steps: Sequence[Fetch]) -> Plan[Rows]:
    rows: Rows = []
    for step in steps:
        rows += yield step
    return rows


class PlannedStore:
    """The backend-independent half of a timeline store; subclasses implement ``_read`` and
    ``_write`` (and the lifecycle, rebuild and swap)."""

    def __init__(self, sql: Sql, rows: RowCodec, *, readonly: bool) -> None:
        self.sql = sql
        self.rows = rows
        self.readonly = readonly
        self.fault_hook: FaultHook | None = None  # tests inject crashes
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("timeline store is closed")

    def _describe(self) -> str:
        raise NotImplementedError

    async def _read(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    async def _write(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    async def _search(self, plan: Plan[T]) -> T:
        """A customer search: where no index narrows it, a scan of every customer (0.5-1.5 s at
        a million, found by a scale audit) that held up every other read of this store (one
        connection, one at a time). A backend runs it on a connection of its own where it can,
        searches one at a time, beside the other reads."""
        return await self._read(plan)

    def _write_guard(self) -> None:
        if self.readonly:
            raise ReadOnlyStore(f"{self._describe()} is open read-only")

    # -- writing ----------------------------------------------------------------------------

    async def apply(
        self,
        batch: Sequence[StoredEvent],
        *,
        key: str = DEFAULT_KEY,
        expect: int | None = None,
        through: int | None = None,
    ) -> None:
        self._write_guard()
        if not batch and through is None and expect is None:
            return
        if await self._write(self._apply(list(batch), key, expect, through)):
            await self._scrub()

    async def _scrub(self) -> None:
        """After an erasure committed: make the old versions of the rows unrecoverable from the
        backend's files where it can (SQLite: checkpoint and truncate the WAL)."""

    def _apply(self, batch: list[StoredEvent], key: str, expect: int | None, through: int | None) -> Plan[bool]:
        """Returns whether the batch erased a customer (``_scrub`` then)."""
        cp = yield from self.sql.lock_checkpoint(key)
        if expect is not None and cp != expect:
            raise CheckpointMismatch(key, expect, cp)
        erased = yield from self._write_rows(by_seq(batch, after=cp))
        new = max(cp, through or 0, max(map(_SEQ, batch), default=0))
        if new != cp:
            yield self.sql.set_checkpoint(key, new)
        return bool(erased)

    async def replace_customer(self, customer_id: str, events: Sequence[StoredEvent], *, through: int) -> None:
        self._write_guard()
        if await self._write(self._replace_customer(customer_id, list(events), through)):
            await self._scrub()

    def _replace_customer(self, customer_id: str, events: list[StoredEvent], through: int) -> Plan[bool]:
        highest = yield from self.sql.highest_checkpoint()
        if highest > through:
            raise CheckpointMismatch("*", through, highest)
        # Erased through another customer (merged into one that was erased): stays erased,
        # though this customer's own events do not say so.
        before = yield self.sql.select_customer(customer_id)
        was_erased = bool(before) and self.rows.row_customer(before[0]).erased
        yield from self.sql.delete_customer(customer_id)
        erased = yield from self._write_rows(by_seq(events, through=through))
        if was_erased and customer_id not in erased:
            yield from self._redact_stored([customer_id])
        return was_erased or bool(erased)

    def _write_rows(self, events: list[StoredEvent]) -> Plan[list[str]]:
        """Fold ``events`` on top of the summaries as committed and write the rows; returns
        the customers the batch erased (their stored rows are redacted too)."""
        if not events:
            return []
        sql, codec = self.sql, self.rows
        conversation_ids, customer_ids = touched(events)
        found = yield from fetch_all(sql.select_by(sql.conversations, FOLD_SUMMARY_COLUMNS, conversation_ids))
        summaries = {r[0]: codec.row_summary(r) for r in found}
        found = yield from fetch_all(sql.select_by(sql.customers, CUSTOMER_COLUMNS, customer_ids))
        customers = {r[0]: codec.row_customer(r) for r in found}
        rows = fold_batch(events, summaries.get, customers.get)
        if rows.repeats:
            count_skip("timelines.fold.repeated", rows.repeats)
            first, last = events[0].seq, events[-1].seq
            log.info("timelines.repeats_left_out", events=rows.repeats, first_seq=first, last_seq=last)
        hook = self.fault_hook
        if hook is None:
            if rows.entries:
                # In key order: a large batch then writes each customer's pages once, together.
                entries = sorted(rows.entries, key=_ENTRY_KEY)
                yield ExecuteMany(sql.insert_entry, codec.entry_rows(entries))
        else:
            for i, e in enumerate(rows.entries):
                yield Execute(sql.insert_entry, codec.entry_row(e))
                hook(i)
        writes: list[tuple[str, list[tuple[Any, ...]]]] = [
            (sql.upsert_summary, codec.summary_rows(rows.summaries.values())),
            (sql.upsert_customer, [codec.customer_row(u) for u in rows.customers.values()]),
            (sql.upsert_link, [(x.merged_id, x.survivor_id, x.seq) for x in rows.links]),
        ]
        for statement, values in writes:
            if values:
                yield ExecuteMany(statement, values)
        if rows.erased:
            yield from self._redact_stored(rows.erased)
        registered = [self._erasure_row(e) for e in events if isinstance(e.event, CustomerErased)]
        if registered:
            yield ExecuteMany(sql.upsert_erasure, registered)
        return rows.erased

    def _erasure_row(self, stored: StoredEvent) -> tuple[Any, ...]:
        """The register's row of one ``CustomerErased``: ids, time, sequence, reason."""
        e = stored.event
        assert isinstance(e, CustomerErased)
        codec = self.rows
        return (e.customer_id, stored.seq, codec.time_out(e.at), e.reason, codec.json_out(list(e.merged_ids)))

    async def expire_bodies(self, before: datetime) -> int:
        self._write_guard()
        changed = await self._write(single(self.sql.expire_bodies(self.rows.time_out(before))))
        if changed:
            await self._scrub()  # the old text leaves the backend's files too, as after an erasure
        return len(changed)

    def _redact_stored(self, customer_ids: Sequence[str]) -> Plan[None]:
        """Redact every stored timeline row and the customer row of ``customer_ids``."""
        sql, codec = self.sql, self.rows
        for customer_id in customer_ids:
            updates: list[tuple[Any, ...]] = []
            for row in (yield sql.select_entries(customer_id)):
                entry = codec.row_entry(row)
                redacted = redact_entry(entry)
                if redacted != entry:
                    detail = codec.json_out(redacted.detail)
                    updates.append((redacted.channel, redacted.text, detail, customer_id, entry.seq))
            if updates:
                yield ExecuteMany(sql.redact_entry, updates)
            found = yield sql.select_customer(customer_id)
            if found:
                yield ExecuteMany(
                    sql.upsert_customer, [codec.customer_row(redact_customer(codec.row_customer(found[0])))]
                )
        yield from sql.forget_search()

    # -- reading ----------------------------------------------------------------------------

    async def _query(
        self, step: Step, convert: Callable[[Rows], K], *, read: Callable[[Plan[K]], Awaitable[K]] | None = None
    ) -> K:
        def plan() -> Plan[K]:
            rows = yield from single(step)
            return convert(rows)

        return await (read or self._read)(plan())

    async def checkpoint(self, key: str = DEFAULT_KEY) -> int:
        return await self._query(Fetch(self.sql.select_checkpoint, (key,)), lambda rows: int(rows[0][0]) if rows else 0)

    async def fold_version(self) -> int | None:
        return await self._query(Fetch(self.sql.select_fold_version), lambda rows: int(rows[0][0]) if rows else None)

    async def checkpoints(self) -> dict[str, int]:
        return await self._query(Fetch(self.sql.select_checkpoints), lambda rows: {k: int(s) for k, s in rows})

    async def last_entry(self) -> tuple[int, str] | None:
        return await self._query(
            Fetch(self.sql.select_last_entry), lambda rows: (int(rows[0][0]), str(rows[0][1])) if rows else None
        )

    async def erasures(self) -> list[ErasureRecord]:
        def convert(rows: Rows) -> list[ErasureRecord]:
            codec = self.rows
            return [
                ErasureRecord(
                    customer_id=r[0],
                    seq=int(r[1]),
                    at=codec._required_time(r[2]),
                    reason=r[3] or "",
                    merged_ids=codec.list_in(r[4]),
                )
                for r in rows
            ]

        return await self._query(Fetch(self.sql.select_erasures), convert)

    async def timeline(
        self, customer_id: str, *, after: int = 0, limit: int = 100, channel: str | None = None
    ) -> list[TimelineEntry]:
        def plan() -> Plan[list[TimelineEntry]]:
            found = yield Fetch(f"{self.sql.family}SELECT id FROM family", (customer_id,))
            family = [customer_id, *sorted(r[0] for r in found if r[0] != customer_id)]
            # One customer (the usual case): a plain range scan of the primary key, no sort.
            rows = yield Fetch(*self.sql.timeline_page(family, after, limit, channel))
            return [self.rows.row_entry(r) for r in rows]

        return await self._read(plan())

    async def conversation(self, conversation_id: str) -> ConversationSummary | None:
        return await self._query(
            Fetch(self.sql.select_conversation(), (conversation_id,)),
            lambda rows: self.rows.row_summary(rows[0]) if rows else None,
        )

    async def conversations(
        self,
        *,
        status: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        limit: int = 100,
    ) -> list[ConversationSummary]:
        return await self._query(
            Fetch(*self.sql.conversation_list(status, agent_id, customer_id, limit)),
            lambda rows: [self.rows.row_summary(r) for r in rows],
        )

    async def resolved_conversations(
        self, *, agent_id: str | None = None, after: tuple[datetime, str] | None = None, limit: int = 100
    ) -> list[ConversationSummary]:
        key = None if after is None else (self.rows.time_out(after[0]), after[1])
        return await self._query(
            Fetch(*self.sql.resolved_list(agent_id, key, limit)),
            lambda rows: [self.rows.row_summary(r) for r in rows],
        )

    async def customer(self, customer_id: str) -> CustomerSummary | None:
        def plan() -> Plan[CustomerSummary | None]:
            own_step, family_step, merged_step, into_step = self.sql.customer_family(customer_id)
            own = yield own_step
            if not own:
                return None
            family = yield family_step
            merged = yield merged_step
            into = yield into_step
            return with_family(
                self.rows.row_customer(own[0]),
                [self.rows.row_customer(r) for r in family],
                [r[0] for r in merged],
                into[0][0] if into else None,
            )

        return await self._read(plan())

    async def customers(
        self, *, q: str | None = None, tier: str | None = None, limit: int = 100
    ) -> list[CustomerSummary]:
        def found(rows: Rows) -> list[CustomerSummary]:
            return [msgspec.structs.replace(self.rows.row_customer(r), merged_into=r[12]) for r in rows]

        if not q:
            return await self._query(Fetch(*self.sql.customer_list(q, tier, limit)), found)

        def plan() -> Plan[list[CustomerSummary]]:
            return found((yield from self.sql.customer_search(q, tier, limit)))

        return await self._search(plan())

    async def dump(self) -> dict[str, list[tuple[object, ...]]]:
        def plan() -> Plan[dict[str, list[tuple[object, ...]]]]:
            out: dict[str, list[tuple[object, ...]]] = {}
            for table, query in self.sql.dump().items():
                out[table] = [tuple(r) for r in (yield Fetch(query))]
            return out

        return await self._read(plan())
