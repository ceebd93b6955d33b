"""The leading router's queue gauges: conversations waiting and the oldest wait, per queue.

Set by the router that leads alone (``services.router_runner``), from its fold of the log.
Walking every waiting conversation (``router.queues.queue_depth``) is done at most every
``QUEUE_GAUGES_EVERY``, a slice of queues at a time between which the router's loop folds and
decides (in one go, 100,000 waiting stopped it for 0.65 s), and spaced so walking takes at
most ``GAUGES_DUTY`` of the router's time. Series of queues no longer waiting are removed, and
all of them when the router stops leading: the registry is per process, and a stale gauge
would read as a queue still waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from router.queues import queue_depth
from router.state import RouterState
from services.metrics import QUEUE_DEPTH, QUEUE_OLDEST_WAIT

QUEUE_GAUGES_EVERY = 1.0
GAUGES_SLICE_S = 0.002
GAUGES_DUTY = 0.02

Labels = tuple[str, str]  # queue key, channel


class QueueGauges:
    """``state`` and ``clock``: the router's current state and time, read at each walk;
    ``leading``: set while the router leads (only then are the gauges walked)."""

    def __init__(self, state: Callable[[], RouterState], clock: Callable[[], datetime], leading: asyncio.Event) -> None:
        self._state = state
        self._clock = clock
        self._leading = leading
        self._keys: set[Labels] = set()

    async def forever(self) -> None:
        """Waiting conversations and the oldest wait per queue while leading, walked a slice
        at a time (``GAUGES_SLICE_S``), at most every ``QUEUE_GAUGES_EVERY`` and spaced so the
        walk takes at most ``GAUGES_DUTY`` of the time."""
        while True:
            began = time.monotonic()
            spent = await self._walk() if self._leading.is_set() else 0.0
            elapsed = time.monotonic() - began
            await asyncio.sleep(max(QUEUE_GAUGES_EVERY, spent / GAUGES_DUTY) - elapsed)

    async def _walk(self) -> float:
        """One walk over every queue; returns the CPU seconds it took (its slices)."""
        now_ts = self._clock().timestamp()
        seen: set[Labels] = set()
        spent = 0.0
        slice_began = time.perf_counter()
        for key in list(self._state().queues):
            state = self._state()  # the loop folds between slices: always its latest state
            signature = state.queue_signatures.get(key)
            if signature is not None:
                waiting, oldest = queue_depth(state, key, now_ts)
                if waiting:
                    labels = (key, signature.channel)
                    seen.add(labels)
                    self._keys.add(labels)  # so a stand-down mid-walk clears it too
                    QUEUE_DEPTH.labels(*labels).set(waiting)
                    QUEUE_OLDEST_WAIT.labels(*labels).set(oldest)
            if time.perf_counter() - slice_began >= GAUGES_SLICE_S:
                spent += time.perf_counter() - slice_began
                await asyncio.sleep(0)  # the loop folds and decides in between
                if not self._leading.is_set():
                    return spent  # stood down: the router cleared the gauges
                slice_began = time.perf_counter()
        spent += time.perf_counter() - slice_began
        self.clear(keep=seen)
        return spent

    def clear(self, keep: frozenset[Labels] | set[Labels] = frozenset()) -> None:
        """Drop this runner's queue series that are gone (all of them when it stops leading):
        the registry is per process, and a stale gauge would read as a queue still waiting."""
        for labels in self._keys - keep:
            QUEUE_DEPTH.remove(*labels)
            QUEUE_OLDEST_WAIT.remove(*labels)
        self._keys = self._keys & keep
