"""A NATS client closed while its server is away stops trying to reconnect. nats-py's close
cancels its reconnect loop, and on Python 3.11 that cancellation is lost when it lands as a
connect attempt fails (``asyncio.wait_for`` hands back the attempt's error instead): the loop
went on, logging a traceback every half second, and could hold up a tool's exit. The loop here
swallows the first cancellation the same way, on purpose, so the test does not hang on timing."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from services.bus.connection import connect_nats, forget, let_go, reconnecting_stopped
from services.bus.embedded import EmbeddedNats

pytestmark = pytest.mark.integration


async def _loses_the_first_cancel() -> None:
    """A reconnect loop as it behaves when the cancel lands in a failed connect attempt."""
    with contextlib.suppress(asyncio.CancelledError):  # lost, as asyncio.wait_for loses it on 3.11
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)


async def test_a_client_closed_during_an_outage_stops_reconnecting(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "js")
    await server.astart()
    nc = await connect_nats(server.url, name="outage")
    await server.astop()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not nc.is_reconnecting:
        assert loop.time() < deadline, "the client never noticed the server was gone"
        await asyncio.sleep(0.05)
    forget(nc)
    await let_go(nc, drain=False)  # nats-py's close may raise its socket's CancelledError here
    nc._reconnection_task = asyncio.create_task(_loses_the_first_cancel())
    await asyncio.sleep(0)  # it runs
    nc._reconnection_task.cancel()  # what close() did, and lost
    await asyncio.sleep(0)
    assert not nc._reconnection_task.done()
    await reconnecting_stopped(nc)
    assert nc._reconnection_task.done()
