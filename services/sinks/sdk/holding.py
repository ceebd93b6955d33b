"""Work done for the leader of a sink, with its lease renewed while the work lasts.

The runtime renewed the lease between events only. One event's handling can outlast the lease
(a helpdesk answering a ticket create in 12 s against the 10 s default ``lease_seconds``; the
API client's own timeout is 15 s per attempt): the standby then took the lease and handled the
same event, found no ticket yet, and created a second one (found by the replicas audit with
two replicas of the Freshdesk sink). Renewed every third of the lease meanwhile, a live leader
keeps it; one that cannot renew (NATS away, the lease taken) stops the work, as a crash would:
the next leader takes the event again from the saved position.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from events.stopping import cancel_and_wait
from services.lease import Lease

T = TypeVar("T")


class LeaseLost(Exception):
    """The lease could not be renewed while the work ran: the work was cancelled."""


async def while_holding(lease: Lease, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result (or its exception), with ``lease`` renewed every ``ttl / 3`` meanwhile;
    ``LeaseLost`` once a renewal fails."""
    task = asyncio.create_task(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=lease.ttl / 3)
            if done:
                return task.result()
            if not await lease.renew():
                raise LeaseLost(f"lease {lease.name} lost while the work ran")
    finally:
        if not task.done():
            await cancel_and_wait(task)
