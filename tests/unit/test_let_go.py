"""``let_go``: closing a NATS client during an outage ends its reconnect loop and finishes the
clean-up, even when nats-py's close raises the CancelledError of its own socket (seen in a full
test run), while a cancellation of the caller still goes through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.bus.connection import let_go


class ClosingClient:
    """What ``let_go`` uses of a nats-py client; ``close`` behaves as told."""

    def __init__(self, close: Any) -> None:
        self._close = close
        self.options = {"name": "test"}
        self._reconnection_task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self._close()

    async def drain(self) -> None:
        await self._close()


async def test_nats_pys_own_cancelled_error_is_not_the_callers() -> None:
    async def socket_close_waiter_cancelled() -> None:
        raise asyncio.CancelledError

    loop_task = asyncio.create_task(asyncio.sleep(3600))  # its reconnect loop, still running
    client = ClosingClient(socket_close_waiter_cancelled)
    client._reconnection_task = loop_task
    for drain in (True, False):
        await let_go(client, drain=drain)  # type: ignore[arg-type]
    assert loop_task.cancelled()


async def test_a_cancelled_caller_is_cancelled() -> None:
    started = asyncio.Event()

    async def slow_close() -> None:
        started.set()
        await asyncio.sleep(3600)

    loop_task = asyncio.create_task(asyncio.sleep(3600))
    client = ClosingClient(slow_close)
    client._reconnection_task = loop_task
    closing = asyncio.create_task(let_go(client))  # type: ignore[arg-type]
    await started.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.sleep(0)
    assert loop_task.cancelled()  # its reconnect loop is told to end as well (found in review)


async def test_a_failing_close_still_ends_the_reconnect_loop() -> None:
    async def refused() -> None:
        raise OSError("connection refused")

    loop_task = asyncio.create_task(asyncio.sleep(3600))
    client = ClosingClient(refused)
    client._reconnection_task = loop_task
    await let_go(client)  # type: ignore[arg-type]
    assert loop_task.cancelled()
