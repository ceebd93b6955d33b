"""The API's live view of routing: the router's own fold of ``rd.evt.>``, kept in memory.

The API never decides; it reads this state to answer queries and to check commands
(is there an offer for this agent?), and appends commands with the conversation's subject
sequence as the expected one, so a stale view gets a conflict, never a wrong write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from events import subjects
from events.store import EventStore, StoredEvent, Tail, reading_as
from router.fold import evolve
from router.state import RouterState

log = structlog.get_logger(__name__)


Fold = Callable[[StoredEvent], None]


class Listener:
    """Every event the live view applies after ``LiveState.listen()``, in order, for one
    reader (a live stream). Bounded: a reader that falls ``limit`` events behind is cut off
    (``overflowed``) rather than holding the process's memory; it resumes from the log."""

    def __init__(self, owner: LiveState, limit: int) -> None:
        self._owner = owner
        self.queue: asyncio.Queue[StoredEvent] = asyncio.Queue(limit)
        self.overflowed = False

    def offer(self, stored: StoredEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(stored)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next(self, timeout: float) -> StoredEvent | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def drain(self) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    def close(self) -> None:
        self._owner._listeners.discard(self)


class LiveState:
    """The API process's one reader of the log. It folds every event into the routing view
    and hands it to the other folds registered before ``start`` (the agent-token table) and
    to the live streams listening, so the process reads the log once, however many views
    and open streams it has."""

    def __init__(self, store: EventStore) -> None:
        self.store = reading_as(store, "api")
        self.state = RouterState()
        self.position = 0  # last stream sequence every fold has seen
        self._folds: list[Fold] = []
        self._listeners: set[Listener] = set()
        self._tail: Tail | None = None
        self._task: asyncio.Task[None] | None = None
        self._advanced = asyncio.Condition()

    def add_fold(self, fold: Fold) -> None:
        if self._task is not None:
            raise RuntimeError("add folds before LiveState.start(): a late fold would miss the past")
        self._folds.append(fold)

    def listen(self, limit: int = 10_000) -> Listener:
        """Events applied from now on (after ``position``), for a reader that follows the log
        without a consumer of its own on the server."""
        listener = Listener(self, limit)
        self._listeners.add(listener)
        return listener

    async def start(self) -> None:
        """Catch up with the log as it stands, then follow it: once this returns, answers
        and token checks reflect everything written before the API started."""
        async for batch in self.store.replay(subjects.EVENTS_ALL, 1):
            self._apply(batch)
        self._tail = await self.store.tail(subjects.EVENTS_ALL, self.position + 1)
        self._task = asyncio.create_task(self._run(), name="api-live-state")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._tail:
            await self._tail.close()

    def _apply(self, batch: list[StoredEvent]) -> None:
        for stored in batch:
            # Each fold on its own: an event one of them cannot apply is quarantined (once) and
            # skipped by that fold; the others, and everything after it, still count.
            try:
                self.state = evolve(self.state, stored.seq, stored.subject, stored.event)
            except Exception as err:
                self.store.cannot_apply(stored, err)
                self.state.last_seq = max(self.state.last_seq, stored.seq)
            for fold in self._folds:
                try:
                    fold(stored)
                except Exception as err:
                    self.store.cannot_apply(stored, err)
            self.position = max(self.position, stored.seq)
            for listener in self._listeners:
                listener.offer(stored)

    async def _run(self) -> None:
        assert self._tail is not None
        while True:
            await self._tail.wait(timeout=None)
            self._apply(self._tail.drain())
            async with self._advanced:
                self._advanced.notify_all()

    async def wait_for(self, seq: int, timeout: float = 5.0) -> bool:
        """Until every view includes ``seq`` (read-your-writes after an append)."""

        async def reached() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self.position >= seq)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            return False
        return True
