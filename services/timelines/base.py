"""What both backends do, written once: ``PlannedStore`` implements ``TimelineStore`` (but for
opening, closing, rebuild and swap) as plans (see ``steps``) over the backend's ``Sql`` and
``RowCodec``. A backend says how a plan runs: ``_write`` in one write transaction, ``_read``
without one.

Exactly once in effect: ``apply`` reads (and, where the backend locks, locks) the checkpoint,
skips the events at or below it, writes the rows of the rest and moves the checkpoint, all in
one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from events.model import CustomerEvent
from events.store import StoredEvent
from services.timelines.batch import fold_batch
from services.timelines.queries import Sql
from services.timelines.rowmap import CUSTOMER_COLUMNS, SUMMARY_COLUMNS, RowCodec
from services.timelines.rows import ConversationSummary, CustomerSummary, TimelineEntry
from services.timelines.steps import Execute, ExecuteMany, Fetch, Plan, Rows, Step, single
from services.timelines.store import DEFAULT_KEY, CheckpointMismatch, FaultHook, ReadOnlyStore
from services.timelines.summaries import with_family

T = TypeVar("T")
K = TypeVar("K")


def by_seq(events: Sequence[StoredEvent], *, after: int = 0, through: int | None = None) -> list[StoredEvent]:
    """The events with ``after < seq <= through``, in sequence order."""
    return sorted((e for e in events if e.seq > after and (through is None or e.seq <= through)), key=lambda e: e.seq)


def touched(events: Sequence[StoredEvent]) -> tuple[list[str], list[str]]:
    """The conversations and customers whose summaries a batch may change (sorted: rows are
    locked in the same order by every writer)."""
    conversations = {cid for e in events if isinstance(cid := getattr(e.event, "conversation_id", None), str)}
    customers = {e.event.customer_id for e in events if isinstance(e.event, CustomerEvent)}
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
        await self._write(self._apply(list(batch), key, expect, through))

    def _apply(self, batch: list[StoredEvent], key: str, expect: int | None, through: int | None) -> Plan[None]:
        cp = yield from self.sql.lock_checkpoint(key)
        if expect is not None and cp != expect:
            raise CheckpointMismatch(key, expect, cp)
        yield from self._write_rows(by_seq(batch, after=cp))
        new = max([cp, through or 0, *(e.seq for e in batch)])
        if new != cp:
            yield self.sql.set_checkpoint(key, new)

    async def replace_customer(self, customer_id: str, events: Sequence[StoredEvent], *, through: int) -> None:
        self._write_guard()
        await self._write(self._replace_customer(customer_id, list(events), through))

    def _replace_customer(self, customer_id: str, events: list[StoredEvent], through: int) -> Plan[None]:
        highest = yield from self.sql.highest_checkpoint()
        if highest > through:
            raise CheckpointMismatch("*", through, highest)
        yield from self.sql.delete_customer(customer_id)
        yield from self._write_rows(by_seq(events, through=through))

    def _write_rows(self, events: list[StoredEvent]) -> Plan[None]:
        """Fold ``events`` on top of the summaries as committed and write the rows."""
        if not events:
            return
        sql, codec = self.sql, self.rows
        conversation_ids, customer_ids = touched(events)
        found = yield from fetch_all(sql.select_by(sql.conversations, SUMMARY_COLUMNS, conversation_ids))
        summaries = {r[0]: codec.row_summary(r) for r in found}
        found = yield from fetch_all(sql.select_by(sql.customers, CUSTOMER_COLUMNS, customer_ids))
        customers = {r[0]: codec.row_customer(r) for r in found}
        rows = fold_batch(events, summaries.get, customers.get)
        hook = self.fault_hook
        if hook is None:
            if rows.entries:
                yield ExecuteMany(sql.insert_entry, [codec.entry_row(e) for e in rows.entries])
        else:
            for i, e in enumerate(rows.entries):
                yield Execute(sql.insert_entry, codec.entry_row(e))
                hook(i)
        writes: list[tuple[str, list[tuple[Any, ...]]]] = [
            (sql.upsert_summary, [codec.summary_row(s) for s in rows.summaries.values()]),
            (sql.upsert_customer, [codec.customer_row(u) for u in rows.customers.values()]),
            (sql.upsert_link, [(x.merged_id, x.survivor_id, x.seq) for x in rows.links]),
        ]
        for statement, values in writes:
            if values:
                yield ExecuteMany(statement, values)

    # -- reading ----------------------------------------------------------------------------

    async def _query(self, step: Step, convert: Callable[[Rows], K]) -> K:
        def plan() -> Plan[K]:
            rows = yield from single(step)
            return convert(rows)

        return await self._read(plan())

    async def checkpoint(self, key: str = DEFAULT_KEY) -> int:
        return await self._query(Fetch(self.sql.select_checkpoint, (key,)), lambda rows: int(rows[0][0]) if rows else 0)

    async def fold_version(self) -> int | None:
        return await self._query(Fetch(self.sql.select_fold_version), lambda rows: int(rows[0][0]) if rows else None)

    async def checkpoints(self) -> dict[str, int]:
        return await self._query(Fetch(self.sql.select_checkpoints), lambda rows: {k: int(s) for k, s in rows})

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
        return await self._query(
            Fetch(*self.sql.customer_list(q, tier, limit)),
            lambda rows: [msgspec.structs.replace(self.rows.row_customer(r), merged_into=r[11]) for r in rows],
        )

    async def dump(self) -> dict[str, list[tuple[object, ...]]]:
        def plan() -> Plan[dict[str, list[tuple[object, ...]]]]:
            out: dict[str, list[tuple[object, ...]]] = {}
            for table, query in self.sql.dump().items():
                out[table] = [tuple(r) for r in (yield Fetch(query))]
            return out

        return await self._read(plan())
