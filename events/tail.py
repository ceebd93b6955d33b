"""A live view of the log: an ordered consumer feeding a local queue (``EventStore.tail``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from events.codec import Undecodable
from events.skips import count_skip
from events.stored import StoredEvent, to_stored

_log = structlog.get_logger(__name__)


class Tail:
    def __init__(
        self,
        on_undecodable: Callable[[StoredEvent], None] | None = None,
        opener: Callable[[StoredEvent], Awaitable[StoredEvent]] | None = None,
    ) -> None:
        self.queue: asyncio.Queue[StoredEvent] = asyncio.Queue()
        self.sub: JetStreamContext.PushSubscription | None = None
        self._arrived = asyncio.Event()
        self._on_undecodable = on_undecodable
        self._opener = opener

    async def on_msg(self, msg: Msg) -> None:
        stored = to_stored(msg)
        if self._on_undecodable is not None and isinstance(stored.event, Undecodable):
            self._on_undecodable(stored)  # quarantined; still queued, so readers count its sequence
        if self._opener is not None:
            stored = await self._open_patiently(stored)
        self.queue.put_nowait(stored)
        self._arrived.set()

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

    async def wait(self, timeout: float | None) -> bool:
        """Until something has arrived (True) or ``timeout`` passed (False); takes nothing."""
        if not self.queue.empty():
            return True
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def next(self, timeout: float | None) -> StoredEvent | None:
        """The next event, or None when ``timeout`` passes without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def drain(self, limit: int = 10_000) -> list[StoredEvent]:
        """What has already arrived, without waiting."""
        out: list[StoredEvent] = []
        while len(out) < limit:
            try:
                out.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return out

    async def close(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()
            self.sub = None
