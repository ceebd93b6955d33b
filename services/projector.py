"""The projector: folds ``rd.evt.c.>`` into the timeline store, exactly once in effect.

A catch-up (``catch_up``: start, ``rebuild timelines``) reads in large batches through
``events.replay.replay_batches`` and applies each batch in one transaction. Afterwards it
follows the log from the store's checkpoint + 1 with an ordered consumer, groups events
into batches (flushed when full or ``idle`` seconds after the batch's first event) and hands
each batch to ``TimelineStore.apply``, which writes rows and checkpoint in one transaction.
A crash anywhere loses nothing (the checkpoint did not move) and duplicates nothing (events
at or below the checkpoint are skipped).

Several projectors can share the work: ``partition=(i, n)`` folds only the customers with
``crc32(customer_id) % n == i`` and keeps its own checkpoint (key ``p<i>of<n>``). Each still
reads the whole log (reading is cheap, ~170k msg/s with an ordered consumer; folding and
writing is the work that is shared).

Logs carry sequence numbers and customer/conversation ids, never message bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import structlog
from nats.js.errors import NotFoundError

from events import subjects
from events.replay import replay_batches
from events.skips import count_skip
from events.stopping import cancel_and_wait
from events.store import EventStore, StoredEvent, reading_as
from services.erasures_undone import UndoneWatch
from services.timelines.applier import BatchApplier
from services.timelines.fold import FOLD_VERSION
from services.timelines.store import CheckpointMismatch, TimelineStore

log = structlog.get_logger("relaydesk.projector")

# Events per batch of a whole-store rebuild: one read hand-over, one fold and one write
# transaction each (measured with ``relaydesk bench rebuild``: 10,000 fills the writer
# process's pipeline sooner and drains it sooner than 20,000, for the same CPU).
REBUILD_BATCH = 10_000


class Projector(BatchApplier):
    def __init__(
        self,
        store: EventStore,
        timelines: TimelineStore,
        *,
        batch_size: int = 500,
        idle: float = 0.05,
        partition: tuple[int, int] = (0, 1),
        filter_subject: str = subjects.CUSTOMER_EVENTS_ALL,
        resubscribe_after: float = 30.0,
        max_backoff: float = 10.0,
        rebuild_if_stale: bool = True,
        reader: str = "projector",
    ) -> None:
        super().__init__(timelines, partition=partition)
        self.store = reading_as(store, reader)
        self.batch_size = max(1, batch_size)
        self.idle = idle
        self.filter_subject = filter_subject
        self.resubscribe_after = resubscribe_after
        self.max_backoff = max_backoff
        self.auto_rebuild = rebuild_if_stale
        self.rebuilding = False  # a rebuild from the log into a shadow copy runs (health: no stall)
        # Why it is retrying, until the store or the log answers again (health: said at once,
        # not only once stale_seconds have passed).
        self.last_error: str | None = None
        # Erasures a restore of NATS undid: the register in the store against the log.
        self.erasures = UndoneWatch(timelines)

    # -- public -----------------------------------------------------------------------

    async def catch_up(self, *, on_batch: Callable[[Sequence[StoredEvent]], None] | None = None) -> int:
        """Apply everything up to the current end of the log; return the checkpoint.
        ``on_batch`` sees every applied chunk (progress bars)."""
        while True:
            self.position = await self.timelines.checkpoint(self.key)
            try:
                async for chunk in self._replay(self.position + 1):
                    await self._apply(chunk)
                    if on_batch is not None:
                        on_batch(chunk)
            except CheckpointMismatch as moved:
                log.info("projector.checkpoint_moved", key=self.key, expected=moved.expected, actual=moved.actual)
                continue
            return await self.timelines.checkpoint(self.key)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log until ``stop`` is set; on NATS or store errors, back off and resume
        from the checkpoint. Pending events are flushed before returning."""
        delay = 0.1
        # The store is checked against the log at start and again after each reconnect: NATS
        # restored from an older backup under a running projector comes back as a reconnect,
        # and followed from its checkpoint the restored log's new events up to it were skipped
        # while it said it was caught up (an operator audit).
        checked_at: int | None = None  # the client's reconnect count when last checked
        log.info("projector.start", key=self.key, batch_size=self.batch_size)
        while not stop.is_set():
            if self.store.nc.is_closed:
                raise RuntimeError("projector: the NATS connection is closed")
            try:
                if checked_at != (reconnects := self._reconnects()):
                    if self.auto_rebuild and not await self._rebuild_unless_stopped(stop):
                        break
                    await self._check_erasures()
                    checked_at = reconnects
                await self._follow(stop)
                delay = 0.1
            except CheckpointMismatch as moved:
                # The store was rebuilt and swapped in underneath us: resume from its checkpoint.
                log.info("projector.checkpoint_moved", key=self.key, expected=moved.expected, actual=moved.actual)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.last_error = _first_line(err)
                log.warning(
                    "projector.retry", key=self.key, position=self.position, error=repr(err), backoff=round(delay, 2)
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
                delay = min(delay * 2, self.max_backoff)
        log.info("projector.stop", key=self.key, position=self.position)

    async def _rebuild_unless_stopped(self, stop: asyncio.Event) -> bool:
        """``rebuild_if_stale``, given up when ``stop`` is set (False then): a rebuild at start
        takes minutes on a long log, longer than a container's grace period, and a SIGKILL
        mid-way left the shadow copy for the next start to throw away anyway."""
        rebuild = asyncio.create_task(self.rebuild_if_stale(), name=f"projector-rebuild-{self.key}")
        stopping = asyncio.create_task(stop.wait(), name=f"projector-stop-{self.key}")
        try:
            await asyncio.wait({rebuild, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this task cancelled: the rebuild goes with it
            await cancel_and_wait(rebuild)
            raise
        finally:
            await cancel_and_wait(stopping)
        if not rebuild.done():
            log.warning(
                "projector.rebuild_abandoned",
                key=self.key,
                reason="stopping",
                action="the shadow copy is dropped; the old rows keep serving; the next start rebuilds",
            )
            await cancel_and_wait(rebuild)
            return False
        rebuild.result()  # its failure, if it failed: retried with back-off like any other
        return True

    async def rebuild_if_stale(self) -> bool:
        """If the store's rows were built by another ``FOLD_VERSION`` (an upgrade changed the
        fold), rebuild them from the log into a shadow copy and swap it in; the old rows keep
        serving meanwhile. Only partition 0 does it; the others resume after the swap."""
        if self.index != 0:
            return False
        version = await self.timelines.fold_version()
        if version != FOLD_VERSION:
            log.warning("projector.stale_store", found=version, expected=FOLD_VERSION, action="rebuild from the log")
        elif (other := await self._other_log()) is not None:
            log.warning("projector.store_of_another_log", reason=other, action="rebuild from the log")
        else:
            return False
        fresh = await self.timelines.begin_rebuild()
        self.rebuilding = True
        try:
            from services.rebuild import fill_fresh  # (which imports this module)

            reader = self.store.reader if isinstance(self.store, EventStore) else "projector"
            _, checkpoint = await fill_fresh(
                self.store, fresh, batch_size=max(self.batch_size, REBUILD_BATCH), reader=reader
            )
        except BaseException:
            await fresh.close()
            raise
        finally:
            self.rebuilding = False
        await self.timelines.swap_in(fresh)
        log.info("projector.rebuilt", checkpoint=checkpoint, fold_version=FOLD_VERSION)
        return True

    async def _check_erasures(self) -> None:
        """Compare the erasure register with the log (``services.erasures_undone``): after the
        rebuild check, so a store of another log has been rebuilt from this one (its register
        carried over). Partition 0 only, as the rebuild: the store and the log are shared."""
        if self.index == 0 and isinstance(self.store, EventStore):
            await self.erasures.check(self.store.js)

    async def _apply(self, chunk: Sequence[StoredEvent], *, through: int | None = None) -> None:
        await super()._apply(chunk, through=through)
        self.last_error = None
        self.erasures.folded(chunk)  # an undone erasure applied again is done

    async def _other_log(self) -> str | None:
        """Why the store's rows cannot be of this log, or None. After NATS is restored from an
        older backup the log is shorter than what the store applied, or, once new events came,
        holds other events at the sequences the store applied: resumed from its checkpoint the
        projector skipped the new events up to it and kept rows of events that no longer exist,
        and said it was caught up."""
        end = await self.store.last_seq()
        applied = max((await self.timelines.checkpoints()).values(), default=0)
        if applied > end:
            return f"the store applied events up to {applied}; the log ends at {end} (restored from an older backup?)"
        last = await self.timelines.last_entry()
        if last is None or not isinstance(self.store, EventStore):
            return None
        seq, customer_id = last
        try:
            subject = (await self.store.js.get_msg(subjects.EVENTS_STREAM, seq)).subject or ""
        except NotFoundError:
            return f"event {seq}, the store's latest row, is not on the log"
        parsed = subjects.parse_conversation_subject(subject)
        if parsed is None or parsed[0] != subjects.token(customer_id):
            return f"event {seq} on the log is not the one the store's latest row was made from"
        return None

    # -- internals --------------------------------------------------------------------

    def _replay(self, from_seq: int) -> AsyncIterator[list[StoredEvent]]:
        """Catch-up reads: batched ordered replay (``events.replay``); a stand-in store (a
        test's fake) is read through its own ``replay``."""
        if isinstance(self.store, EventStore):
            return replay_batches(self.store, self.filter_subject, from_seq, batch=self.batch_size)
        return self.store.replay(self.filter_subject, from_seq, batch=self.batch_size)

    async def _quarantine(self, stored: StoredEvent, error: str) -> None:
        await self.store.quarantine.record(self.store.reader, stored.seq, stored.subject, error)

    def _batch_refused(self) -> None:
        count_skip("projector.batch_apply")

    def _reconnects(self) -> int:
        stats = getattr(self.store.nc, "stats", None)
        return int(stats.get("reconnects", 0)) if isinstance(stats, dict) else 0

    async def _pump(self, from_seq: int, queue: asyncio.Queue[StoredEvent | BaseException]) -> None:
        try:
            async for stored in self.store.follow(self.filter_subject, from_seq):
                await queue.put(stored)
            await queue.put(RuntimeError("the follow iterator ended"))
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            await queue.put(err)

    async def _follow(self, stop: asyncio.Event) -> None:
        self.position = await self.timelines.checkpoint(self.key)
        self.last_error = None  # the store answers again
        queue: asyncio.Queue[StoredEvent | BaseException] = asyncio.Queue(maxsize=self.batch_size * 4)
        pump = asyncio.create_task(self._pump(self.position + 1, queue), name=f"projector-pump-{self.key}")
        loop = asyncio.get_running_loop()
        batch: list[StoredEvent] = []
        deadline = 0.0
        quiet_since = loop.time()
        reconnects = self._reconnects()
        try:
            while not stop.is_set():
                timeout = max(0.0, deadline - loop.time()) if batch else 0.25
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                    # that arrives just as the inner get completes, and the task would run on.
                    async with asyncio.timeout(timeout):
                        item = await queue.get()
                except TimeoutError:
                    if batch:
                        await self._apply(batch)
                        batch = []
                    elif self._reconnects() != reconnects:
                        # The client reconnected (e.g. a server restart): a fresh consumer from
                        # the checkpoint resumes at once instead of waiting for heartbeats.
                        log.info("projector.resubscribe", key=self.key, position=self.position, why="reconnected")
                        return
                    elif loop.time() - quiet_since > self.resubscribe_after:
                        return  # refresh an idle subscription (cheap; guards against a stalled consumer)
                    continue
                quiet_since = loop.time()
                while True:
                    if isinstance(item, BaseException):
                        if batch:
                            await self._apply(batch)
                        raise item
                    if item.seq > self.position:
                        if not batch:
                            deadline = loop.time() + self.idle
                        batch.append(item)
                    if len(batch) >= self.batch_size or queue.empty():
                        break
                    item = queue.get_nowait()
                if len(batch) >= self.batch_size:
                    await self._apply(batch)
                    batch = []
            if batch:
                await self._apply(batch)
        finally:
            await cancel_and_wait(pump)


def _first_line(err: BaseException) -> str:
    """The error's type and first line, short enough for a health detail."""
    words = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {words}"[:200] if words else type(err).__name__
