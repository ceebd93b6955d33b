"""A service's own NATS connection closing at shutdown is not a warning: a clean Ctrl-C of
`relaydesk up` logged ``nats.disconnected`` at warning level once per connection (about ten),
which reads like an outage. A server that goes away is still warned of."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.bus.connection import connect_nats
from services.bus.embedded import EmbeddedNats

pytestmark = pytest.mark.integration


def _disconnects(log_lines: list[dict[str, Any]]) -> list[str]:
    return [str(line["log_level"]) for line in log_lines if line["event"] == "nats.disconnected"]


async def test_closing_our_own_connection_is_no_warning_but_losing_the_server_is(
    tmp_path: Path, log_lines: list[dict[str, Any]]
) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "js")
    url = server.start()
    try:
        nc = await connect_nats(url, name="closing-test")
        await nc.drain()
        assert _disconnects(log_lines) == ["debug"]

        log_lines.clear()
        nc = await connect_nats(url, name="outage-test")
        server.stop()
        async with asyncio.timeout(20):
            while not _disconnects(log_lines):
                await asyncio.sleep(0.05)
        await nc.close()
        assert _disconnects(log_lines)[0] == "warning"
    finally:
        server.stop()
