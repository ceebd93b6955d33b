"""Stopping a background task for sure.

On Python 3.11 one ``task.cancel()`` is not enough to stop a loop around nats-py's
``fetch()`` / ``next_msg()``: those await through ``asyncio.wait_for``, and 3.11's
``wait_for`` returns the inner result instead of raising when the cancel lands in the same
loop iteration as a message (CPython gh-86296, fixed in 3.12). The loop then runs on with
the cancel spent, and ``await task`` after ``cancel()`` waits forever: a stop that hangs.
``cancel_and_wait`` cancels again until the task has ended, and says so when it had to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger("relaydesk.stopping")

RETRY_EVERY = 0.5
GIVE_UP_AFTER = 30.0


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, retry_every: float = RETRY_EVERY) -> None:
    """Cancel ``task`` and wait until it has ended; its result or error is discarded."""
    if task is None:
        return
    await cancel_all_and_wait((task,), retry_every=retry_every)


async def cancel_all_and_wait(tasks: Iterable[asyncio.Task[Any]], *, retry_every: float = RETRY_EVERY) -> None:
    """Cancel every task, cancelling again those that swallowed it, until all have ended.

    Gives up (with an error line naming the tasks) after ``GIVE_UP_AFTER`` seconds rather than
    hang a shutdown: a task that ignores cancellation for that long is a bug to see, not to wait on.
    """
    every = list(tasks)
    pending = {t for t in every if not t.done()}
    rounds = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GIVE_UP_AFTER
    while pending:
        for task in pending:
            task.cancel()
        rounds += 1
        _, pending = await asyncio.wait(pending, timeout=retry_every)
        if pending and loop.time() >= deadline:
            log.error("task.not_stopping", tasks=sorted(t.get_name() for t in pending), cancels=rounds)
            break
    if rounds > 1:
        log.warning("task.cancel_swallowed", cancels=rounds)
    for task in every:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
