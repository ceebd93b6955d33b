"""A live view of the log: an ordered consumer feeding a local queue (``EventStore.tail``).

The queue is bounded by pausing: a reader that folds slower than the log arrives (every cold
start on a long log) held the whole log in memory, decoded (724 MB for a delivery service at
1,000,000 events). Past ``PAUSE_AT`` events waiting, the tail stops its consumer (nats-py drops
what it had not handed on yet, and the server sends no more); once the reader has taken all
but ``RESUME_AT``, a new consumer starts after the last event queued. Nothing is skipped and
nothing is queued twice. Blocking the callback instead does not bound anything: nats-py answers
the server's flow control as it receives, and keeps the messages in its own pending queue. So
the callback only decodes and queues: sealed events are opened by a task of their own between
two local queues (both counted for the pause). Opened in the callback, a reader that opens slower
than the log arrives left the backlog in nats-py's queue, out of the pause's sight (1.1 GB at
715,000 sealed events on a cold delivery start).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from events.codec import Undecodable
from events.skips import count_skip
from events.stored import StoredEvent, to_stored

_log = structlog.get_logger(__name__)

PAUSE_AT = 20_000
RESUME_AT = 5_000
RESUBSCRIBE_PAUSE_MAX_S = 5.0

Subscribe: TypeAlias = Callable[[int], Awaitable[JetStreamContext.PushSubscription]]  # from a stream sequence


class Tail:
    def __init__(
        self,
        on_undecodable: Callable[[StoredEvent], None] | None = None,
        opener: Callable[[StoredEvent], Awaitable[StoredEvent]] | None = None,
        *,
        pause_at: int = PAUSE_AT,
        resume_at: int = RESUME_AT,
        reconnects: Callable[[], int] | None = None,
    ) -> None:
        self.queue: asyncio.Queue[StoredEvent] = asyncio.Queue()  # ready for the reader
        self._sealed: asyncio.Queue[StoredEvent] = asyncio.Queue()  # received, to be opened first
        self._opening: asyncio.Task[None] | None = None
        self._being_opened = 0  # taken from ``_sealed``, not yet in ``queue``
        self.sub: JetStreamContext.PushSubscription | None = None
        self.last_seq = 0  # of the last event queued
        self.pauses = 0
        self.pause_at, self.resume_at = pause_at, resume_at
        self._subscribe: Subscribe | None = None
        self._paused = False
        self._closed = False
        self._switching: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._on_undecodable = on_undecodable
        self._opener = opener
        # The client's reconnect count: after a reconnect, a fresh consumer from the last event
        # queued (``_renew``). Found by a timing of the outage tests: nats-py noticed its
        # ordered consumer gone only from missed heartbeats, and the router routed a waiting
        # conversation 11 s after NATS came back.
        self._reconnects = reconnects
        self._reconnects_seen = reconnects() if reconnects is not None else 0

    async def start(self, subscribe: Subscribe, from_seq: int) -> None:
        """Follow the log from ``from_seq`` with consumers ``subscribe`` makes (its
        subscription calls ``on_msg``)."""
        self._subscribe = subscribe
        self.last_seq = max(1, from_seq) - 1
        self.sub = await subscribe(self.last_seq + 1)

    async def on_msg(self, msg: Msg) -> None:
        if self._closed:  # a consumer a resume made while the tail was being closed
            return
        stored = to_stored(msg)
        if stored.seq <= self.last_seq:  # queued already (cannot happen: a consumer starts after it)
            return
        if self._on_undecodable is not None and isinstance(stored.event, Undecodable):
            self._on_undecodable(stored)  # quarantined; still queued, so readers count its sequence
        if self._opener is not None:
            self._sealed.put_nowait(stored)
            if self._opening is None:
                self._opening = asyncio.create_task(self._open_in_order(), name="tail-open")
        else:
            self._ready(stored)
        self.last_seq = stored.seq
        if not self._paused and self.waiting() >= self.pause_at and self._subscribe is not None:
            self._paused = True
            self._switching = asyncio.create_task(self._pause(), name="tail-pause")

    def waiting(self) -> int:
        """Events received and not yet taken by the reader (opened or not)."""
        return self.queue.qsize() + self._sealed.qsize() + self._being_opened

    def _ready(self, stored: StoredEvent) -> None:
        self.queue.put_nowait(stored)
        self._arrived.set()

    async def _open_in_order(self) -> None:
        while True:
            stored = await self._sealed.get()
            self._being_opened = 1
            try:
                self._ready(await self._open_patiently(stored))
            finally:
                self._being_opened = 0

    async def _pause(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()  # no more on_msg: what nats-py still held is read again later
            except NatsError as err:  # the connection is closing: there is nothing to stop
                _log.debug("tail.pause_unsubscribe_failed", after_seq=self.last_seq, error=repr(err))
        self.pauses += 1
        _log.debug("tail.paused", after_seq=self.last_seq, waiting=self.waiting())
        if self.waiting() <= self.resume_at and not self._closed:
            # The reader took the rest while the consumer was stopping: nothing would call
            # ``_taken`` again (it waits for an event), so go on at once.
            await self._resume()

    async def _resume(self) -> None:
        assert self._subscribe is not None
        pause = 0.2
        while True:
            try:
                self.sub = await self._subscribe(self.last_seq + 1)
                break
            except (TimeoutError, NatsError) as err:  # NATS away: the reader has the queue meanwhile
                _log.warning("tail.resume_retry", from_seq=self.last_seq + 1, error=repr(err))
                await asyncio.sleep(pause)
                pause = min(pause * 2, RESUBSCRIBE_PAUSE_MAX_S)
        self._paused = False
        _log.debug("tail.resumed", from_seq=self.last_seq + 1)

    def _taken(self) -> None:
        """After the reader took some: resume once little is left."""
        if (
            self._paused
            and not self._closed
            and self.waiting() <= self.resume_at
            and (self._switching is None or self._switching.done())
        ):
            self._switching = asyncio.create_task(self._resume(), name="tail-resume")

    async def _open_patiently(self, stored: StoredEvent) -> StoredEvent:
        """Personal fields opened; while the key store does not answer (NATS away) wait and
        try again: the consumer is ordered, so nothing after this event arrives meanwhile."""
        assert self._opener is not None
        pause = 0.2
        while True:
            try:
                return await self._opener(stored)
            except (TimeoutError, NatsError) as err:
                _log.warning("store.open_retry", seq=stored.seq, subject=stored.subject, error=repr(err))
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
            except Exception as err:  # never lose the event from the tail: passed on sealed
                _log.error("store.open_failed", seq=stored.seq, subject=stored.subject, error=repr(err))
                count_skip("store.open")
                return stored

    def _after_reconnect(self) -> None:
        if self._reconnects is None:
            return
        count = self._reconnects()
        if count == self._reconnects_seen:
            return
        self._reconnects_seen = count
        busy = self._switching is not None and not self._switching.done()
        if self._closed or self._paused or busy or self._subscribe is None:
            return  # a resume under way starts a fresh consumer anyway
        self._paused = True
        self._switching = asyncio.create_task(self._renew(), name="tail-renew")

    async def _renew(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except NatsError as err:  # the old consumer is gone with the old connection
                _log.debug("tail.renew_unsubscribe_failed", after_seq=self.last_seq, error=repr(err))
        _log.info("tail.renewed", from_seq=self.last_seq + 1, why="reconnected")
        await self._resume()

    async def wait(self, timeout: float | None) -> bool:
        """Until something has arrived (True) or ``timeout`` passed (False); takes nothing."""
        if not self.queue.empty():
            return True
        self._after_reconnect()  # only with nothing to hand on: not a cost per event
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def next(self, timeout: float | None) -> StoredEvent | None:
        """The next event, or None when ``timeout`` passes without one."""
        if self.queue.empty():
            self._after_reconnect()
        try:
            stored = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        self._taken()
        return stored

    def drain(self, limit: int = 10_000) -> list[StoredEvent]:
        """What has already arrived, without waiting."""
        out: list[StoredEvent] = []
        while len(out) < limit:
            try:
                out.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        self._taken()
        return out

    async def close(self) -> None:
        self._closed = True
        for task in (self._switching, self._opening):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.sub is not None:
            await self.sub.unsubscribe()
            self.sub = None
