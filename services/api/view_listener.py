"""A reader that follows the API's live view event by event (a live stream), without a
consumer of its own on the server: what ``LiveState.listen()`` in ``services.api.readmodel``
hands out.
"""

from __future__ import annotations

import asyncio

from events.store import StoredEvent


class Listener:
    """Every event the live view applies after ``LiveState.listen()``, in order, for one
    reader (a live stream). Bounded: a reader that falls ``limit`` events behind is cut off
    (``overflowed``) rather than holding the process's memory; it resumes from the log."""

    def __init__(self, members: set[Listener], limit: int) -> None:
        self._members = members  # the view's listeners, which this one leaves on close
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
        self._members.discard(self)
