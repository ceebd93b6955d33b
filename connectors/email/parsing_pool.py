"""The threads inbound mail is parsed in: a pool of its own, not asyncio's default executor.

Parsing runs in a thread (a crafted mail costs seconds, ``connector.ingest``), and so do the
replies' SMTP sends (``outbound.send``) and every IMAP call. All shared asyncio's default
executor (``min(32, CPUs + 4)`` threads: 6 on two cores), so a flood of inbound mail (a mail
loop, a sender's thousands; found by the flood audit) queued every reply to every other
customer behind its parses, and IMAP's polling too. Here parsing has ``PARSE_THREADS`` threads
of its own (parsing is Python under the GIL: more threads parse no faster), and the sends and
IMAP keep the default executor to themselves.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

PARSE_THREADS = 2


class ParsingPool:
    def __init__(self, threads: int = PARSE_THREADS) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the pool, with the caller's context (as ``to_thread``)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="email-parse")
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        """Threads let go; a parse under way finishes on its own (its caller has gone)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
