"""``relaydesk rebuild timelines``: rebuild the timeline store from the event log alone.

Whole store: fold ``rd.evt.c.>`` from sequence 1 into a fresh shadow copy next to the live
one (SQLite: shadow tables in the same file; PostgreSQL: a shadow schema), catch up with
whatever arrived meanwhile, then swap it in in one transaction. The live copy keeps serving
readers and the running projector until the swap; afterwards the projector notices its
checkpoint moved (CheckpointMismatch) and resumes from the fresh copy's checkpoint, and
readers see the new rows on their next query. Nothing needs restarting.

One customer (``customer=``): read ``rd.evt.c.<customer>.>`` straight from the stream and
replace that customer's rows in one transaction, checked against the projectors' checkpoints
so events they applied meanwhile are never lost. A customer with no events in the log (a
mistyped id) is refused (``NoCustomerEvents``) before the store is opened: nothing is touched.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import structlog
from nats.errors import Error as NatsError

from events import subjects
from events.personal.keys import PRELOAD_LIMIT
from events.replay import bulk_gc, replay_arrivals
from events.skips import count_skip
from events.store import EventStore, StoredEvent, reading_as
from services.bus.connection import let_go
from services.progress import ShowProgress, showing_progress
from services.projector import REBUILD_BATCH, Projector
from services.timelines import CheckpointMismatch, TimelineStore, open_store

log = structlog.get_logger("relaydesk.rebuild")

T = TypeVar("T")
Writer = Literal["process", "inline"]  # where a whole-store rebuild folds and writes


class NoCustomerEvents(LookupError):
    """A one-customer rebuild found no events for that customer in the log."""

    def __init__(self, customer: str) -> None:
        super().__init__(f"no events for customer {customer} in the log; nothing rebuilt")
        self.customer = customer


class StoreUnavailable(RuntimeError):
    """The target store could not be opened (a directory, no permission, a database down, a
    wrong DSN): said in one line naming the target, its password masked."""

    def __init__(self, target: str, err: BaseException) -> None:
        from services.bus.auth import redact_url

        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        super().__init__(f"cannot open the timelines store {redact_url(target)}: {reason}")


async def _open_target(target: str, schema: str | None) -> TimelineStore:
    try:
        return await open_store(target, schema=schema)
    except Exception as err:
        raise StoreUnavailable(target, err) from err


@dataclass(frozen=True)
class RebuildResult:
    target: str
    customer: str | None
    events: int  # customer events folded into the fresh copy
    checkpoint: int  # the log sequence the rebuilt rows are complete up to
    seconds: float
    swapped: bool  # the whole store was swapped in (False for a one-customer rebuild)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def _let_finish(step: Coroutine[Any, Any, T], what: str) -> T:
    """``step`` carried to its end even when this task is cancelled meanwhile (Ctrl-C, SIGTERM),
    and the cancellation then dropped: the step is one transaction (the swap, a customer's rows)
    that SQLite's thread commits whatever the task does, so stopping while it runs would leave
    unknown whether the live copy is the old one or the new one. It takes seconds; afterwards
    the command ends as it would have, saying what it did."""
    running = asyncio.ensure_future(step)
    interrupted = 0
    while True:
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            if running.cancelled():
                raise  # the step itself was cancelled: nothing left to wait for
            interrupted += 1
            if not running.done():
                if interrupted == 1:
                    print(f"relaydesk: interrupted; finishing {what} first (one transaction)", file=sys.stderr)
                continue
        break
    me = asyncio.current_task()
    if me is not None:
        for _ in range(interrupted):
            me.uncancel()
    return running.result()


async def rebuild_timelines(
    store: EventStore,
    target: str,
    *,
    customer: str | None = None,
    progress: ShowProgress = True,
    schema: str | None = None,
    batch_size: int = REBUILD_BATCH,
    writer: Writer = "process",
) -> RebuildResult:
    """Rebuild the timeline store at ``target`` (a path or a postgresql:// DSN) from the log.
    ``writer``: ``"process"`` folds and writes in a second process while this one reads
    (``services.timelines.bulk``); ``"inline"`` does everything here. Cancelled (Ctrl-C) before
    the swap, nothing is swapped in; once the swap has begun, it finishes (``_let_finish``)."""
    if customer is not None:
        return await _rebuild_customer(store, target, customer, progress=progress, schema=schema)
    started = time.monotonic()
    live = await _open_target(target, schema)
    try:
        fresh = await live.begin_rebuild()
        try:
            async with showing_progress(progress, "rebuild timelines", await store.last_seq() or None) as shown:
                # By log sequence: the total is the log's end.
                folded, checkpoint = await fill_fresh(
                    store, fresh, batch_size=batch_size, on_batch=shown.update, writer=writer
                )
                shown.done(checkpoint)
        except BaseException:
            await fresh.close()
            raise
        checkpoint = await _let_finish(live.swap_in(fresh), "the swap")
    finally:
        await live.close()
    seconds = time.monotonic() - started
    log.info("rebuild.swapped", events=folded, checkpoint=checkpoint, seconds=round(seconds, 3))
    return RebuildResult(target, None, folded, checkpoint, seconds, True)


# Passes over the log after the first, for what arrived meanwhile (each shorter than the last),
# so the swap jumps the live projector back as little as possible.
CATCH_UP_PASSES = 5

OnBatch = Callable[[int], None]  # after each batch: the log sequence read up to


def _ignore(_through: int) -> None:
    pass


async def fill_fresh(
    store: EventStore,
    fresh: TimelineStore,
    *,
    batch_size: int = REBUILD_BATCH,
    on_batch: OnBatch = _ignore,
    writer: Writer = "process",
    reader: str = "rebuild",
) -> tuple[int, int]:
    """Fold the whole log into ``fresh`` (from ``begin_rebuild``), caught up with what arrives
    meanwhile; (events read, checkpoint). ``writer="process"``: read here, fold and write in
    the writer process (``services.timelines.bulk``), where the log is a real event store and
    the store a SQLite or PostgreSQL one; else all here. ``reader`` names who quarantines."""
    from services.timelines.bulk_parent import describe

    with bulk_gc():
        if writer == "process" and isinstance(store, EventStore) and describe(fresh) is not None:
            return await _fill_in_a_process(reading_as(store, reader), fresh, batch_size, on_batch)
        return await _fill_inline(store, fresh, batch_size, on_batch, reader)


async def _fill_in_a_process(
    reader: EventStore, fresh: TimelineStore, batch_size: int, on_batch: OnBatch
) -> tuple[int, int]:
    """Read here, fold and write in the writer process; (events read, checkpoint)."""
    from services.timelines.bulk_parent import BulkWriter

    writer = await BulkWriter.start(fresh, reader=reader.reader)
    try:
        folded = 0
        checkpoint = writer.checkpoint
        if checkpoint == 0:
            await _preload_keys(reader)  # while the writer process starts
        for _ in range(1 + CATCH_UP_PASSES):
            before = checkpoint
            async for arrived in replay_arrivals(
                reader, subjects.CUSTOMER_EVENTS_ALL, checkpoint + 1, batch=batch_size
            ):
                await writer.send(reader, arrived)
                folded += len(arrived)
                on_batch(arrived[-1].seq)
            checkpoint = await writer.flush()
            for refused in writer.refused:  # what the store would not take: as the projector does
                await reader.quarantine.record(reader.reader, refused.seq, refused.subject, refused.error)
            writer.refused.clear()
            if checkpoint == before:
                break
        await writer.finish()
    except BaseException:
        await writer.abort()
        raise
    return folded, checkpoint


async def _preload_keys(store: EventStore) -> None:
    """Every customer key into the cipher's cache at once, before the log's messages crowd the
    connection (read among them, the same keys took four times as long)."""
    keys = store.cipher.keys if store.cipher is not None else None
    if keys is None or keys.preloaded:
        return
    try:
        await keys.preload(limit=PRELOAD_LIMIT)
    except (NatsError, TimeoutError) as err:  # the replay then reads the keys as it meets them
        log.warning("rebuild.key_preload_failed", error=repr(err), action="keys read as the replay needs them")
        count_skip("rebuild.key_preload")


async def _fill_inline(
    store: EventStore, fresh: TimelineStore, batch_size: int, on_batch: OnBatch, reader: str
) -> tuple[int, int]:
    """Read, fold and write in this process (``writer="inline"``); (events read, checkpoint)."""
    projector = Projector(store, fresh, batch_size=batch_size, reader=reader)
    folded = 0

    def count(chunk: Sequence[StoredEvent]) -> None:
        nonlocal folded
        folded += len(chunk)
        on_batch(chunk[-1].seq)

    checkpoint = await projector.catch_up(on_batch=count)
    for _ in range(CATCH_UP_PASSES):
        before = checkpoint
        checkpoint = await projector.catch_up(on_batch=count)
        if checkpoint == before:
            break
    return folded, checkpoint


async def _rebuild_customer(
    store: EventStore, target: str, customer: str, *, progress: ShowProgress, schema: str | None
) -> RebuildResult:
    started = time.monotonic()
    filter_subject = subjects.customer_filter(customer)
    async with showing_progress(progress, f"rebuild {customer}", None) as shown:
        through = await store.last_seq()
        events: list[StoredEvent] = []
        async for chunk in store.replay(filter_subject, 1):
            events.extend(e for e in chunk if e.seq <= through)
            shown.update(len(events))
        if not events:
            # Checked before the store is opened: replacing the rows with nothing would delete
            # whatever rows that id has, and a SQLite target would be created.
            raise NoCustomerEvents(customer)
        live = await _open_target(target, schema)
        try:
            while True:
                try:
                    await _let_finish(
                        live.replace_customer(customer, events, through=through), f"replacing {customer}'s rows"
                    )
                    break
                except CheckpointMismatch as ahead:
                    # A projector applied events past our read: read up to there and retry.
                    start = through + 1
                    async for chunk in store.replay(filter_subject, start):
                        events.extend(e for e in chunk if start <= e.seq <= ahead.actual)
                    through = ahead.actual
            shown.done(len(events))
        finally:
            await live.close()
    seconds = time.monotonic() - started
    log.info("rebuild.customer", customer_id=customer, events=len(events), through=through)
    return RebuildResult(target, customer, len(events), through, seconds, False)


async def rebuild_command(nats_url: str, target: str, customer: str | None, *, message_days: int = 0) -> int:
    """The CLI entry: connect, rebuild, print a one-line summary; returns the exit code.
    A failure is one plain line on stderr: no markup (``[nats] user`` in a reason was eaten as
    a style tag), no wrapping at 80 columns off a terminal, no traceback for a store that
    cannot be opened."""
    from events.personal import CustomerKeys, PersonalDataCipher
    from events.streams import streams_exist
    from services.bootstrap import connect_for_tool

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        nc = await connect_for_tool(nats_url)
    except Exception as err:
        say(f"relaydesk rebuild: cannot connect to NATS at {nats_url}: {err}")
        return 2
    try:
        js = nc.jetstream()
        if not await streams_exist(js):
            say(f"relaydesk rebuild: no Relaydesk event log on {nats_url} (stream {subjects.EVENTS_STREAM} missing)")
            return 2
        if customer is not None:
            try:
                subjects.token(customer)
            except subjects.InvalidToken as err:
                say(f"relaydesk rebuild: {err}")
                return 2
        # [retention] message_days: bodies past it read [expired] however they were sealed (one
        # written before retention was on came back in full, until the projector's next sweep).
        cipher = PersonalDataCipher(CustomerKeys(js), message_days=message_days)
        store = EventStore(nc, js, reader="rebuild", cipher=cipher)
        # A bar for a person at a terminal; else a plain line every PROGRESS_LINE_SECONDS (services.progress).
        show: ShowProgress = True if sys.stderr.isatty() else "lines"
        result = await rebuild_timelines(store, target, customer=customer, progress=show)
        await store.quarantine.settle()
    except (NoCustomerEvents, StoreUnavailable) as err:
        say(f"relaydesk rebuild: {err}")
        return 1
    except Exception as err:
        log.error("rebuild.failed", error=repr(err), exc_info=True)
        say(f"relaydesk rebuild: failed: {(str(err).strip().splitlines() or [type(err).__name__])[0]}")
        return 1
    finally:
        await let_go(nc)
    what = f"customer {customer}" if customer else "all timelines"
    say(
        f"rebuilt {what}: {result.events:,} events up to sequence {result.checkpoint:,} "
        f"in {result.seconds:.1f}s ({result.rate:,.0f} ev/s)" + (", swapped in" if result.swapped else "")
    )
    return 0
