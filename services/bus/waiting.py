"""Saying, while a first connection to NATS gets no answer, that it is being waited for.

A server that never answers (a blackholed address, a port that accepts and says nothing) kept
every tool silent for its whole connect budget (26 s, found by an ops audit): a tired operator
took it for hung. After ``NOTICE_AFTER_S`` without a connection, a tool says on stderr where it
connects, how long it will wait and what sets that; a service logs ``nats.still_connecting``
(a plain line among a service's JSON log lines would be lost to its log pipeline)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextvars import ContextVar

import structlog

log = structlog.get_logger(__name__)

# Long enough that a NATS that answers is never announced, short enough to read as "not hung".
NOTICE_AFTER_S = 1.0

# Set while a one-shot tool runs for a person (``services.tool_runner.interrupted_as``).
_PERSON_WAITS: ContextVar[bool] = ContextVar("relaydesk_person_waits", default=False)


@contextlib.contextmanager
def a_person_waits() -> Iterator[None]:
    """Within it, a slow connection is said on stderr in a sentence, not logged."""
    token = _PERSON_WAITS.set(True)
    try:
        yield
    finally:
        _PERSON_WAITS.reset(token)


def waiting_line(where: str, budget: float, attempt_timeout: float, failed: str = "") -> str:
    """``failed``: why the attempts so far failed ("" while the first one waits for an answer)."""
    so_far = f"{failed} so far, trying again" if failed else "no answer yet"
    return (
        f"relaydesk: connecting to NATS at {where}: {so_far}; waiting up to {budget:g} s "
        f"(3 x [nats] connect_timeout {attempt_timeout:g} s; RELAYDESK_NATS_CONNECT_TIMEOUT sets it). "
        "Not your NATS? Set RELAYDESK_NATS_URL or --nats-url. Ctrl-C stops"
    )


@contextlib.asynccontextmanager
async def said_while_connecting(
    where: str,
    budget: float,
    attempt_timeout: float,
    failures: Sequence[str] = (),
    *,
    after: float = NOTICE_AFTER_S,
) -> AsyncIterator[None]:
    """Around a first connection: once, ``after`` seconds in, say it is still waiting (and, from
    ``failures``, the list the connection's error callback fills, why the tries so far failed)."""

    async def notice() -> None:
        await asyncio.sleep(after)
        failed = failures[-1] if failures else ""
        if _PERSON_WAITS.get():
            print(waiting_line(where, budget, attempt_timeout, failed), file=sys.stderr, flush=True)
        else:
            log.warning("nats.still_connecting", servers=where, waiting_up_to_s=budget, failed=failed or None)

    task = asyncio.create_task(notice())
    try:
        yield
    finally:
        task.cancel()  # not awaited: awaiting it could swallow the caller's own cancellation
