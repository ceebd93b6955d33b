"""Intake waiting out a JetStream whose storage is full, without spending its deliveries.

A message whose plan JetStream refused for want of storage (``events.storage_full``) used to be
handed back like any failure: redelivered after a pause, six deliveries in about 7.5 minutes,
then parked; but parking writes to JetStream too, so it failed, and the message was left neither
recorded nor parked once the server stopped redelivering it (found by a long-run audit: a disk
that filled overnight). Now the delivery is kept (the worker's in-progress acks go on past their
usual limit) and its plan tried again in place, after a pause doubling from 1 s to 30 s, until
JetStream takes it or the worker stops; meanwhile the worker fetches nothing new, so no other
message spends its deliveries either. The plan is idempotent (``services.intake.plan``): a
retry adds exactly what is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from events.storage_full import note_storage_full, storage_full

FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0


class StorageWait:
    """The deliveries a worker holds for storage (by stream sequence)."""

    def __init__(self, first_pause: float = FIRST_PAUSE_S, max_pause: float = MAX_PAUSE_S) -> None:
        self.first_pause, self.max_pause = first_pause, max_pause
        self.held: set[int] = set()
        self.stopping = asyncio.Event()

    @property
    def blocked(self) -> bool:
        """Whether a delivery waits for storage: the worker fetches no more meanwhile."""
        return bool(self.held)

    async def retry(self, seq: int, handle: Callable[[], Awaitable[None]], err: BaseException) -> BaseException | None:
        """``handle()`` again while ``err`` says storage is full; None once it succeeded, else
        the error it ended with (another failure, or the last one when the worker stops)."""
        self.held.add(seq)
        pause = self.first_pause
        try:
            while storage_full(err):
                note_storage_full("intake", err, stream_seq=seq)
                try:
                    await asyncio.wait_for(self.stopping.wait(), pause)
                    return err  # stopping: handed back as any failure is
                except TimeoutError:
                    pass
                pause = min(pause * 2, self.max_pause)
                try:
                    await handle()
                    return None
                except Exception as again:  # said by the caller, as the first failure would be
                    err = again
            return err
        finally:
            self.held.discard(seq)
