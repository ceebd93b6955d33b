"""The API's port (and every other port a client can reach) closes a connection with no
request under way after ``connectors.sdk.runtime.IDLE_CONNECTION_TIMEOUT``: aiohttp's default
kept it for 3,630 s, so a client could hold the port's descriptors at will (found by the
hostile-client audit on the chat port; the API and the sinks had the same default). A request
being served is not idle."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from connectors.sdk import runtime as connector_runtime
from services.bus.embedded import EmbeddedNats
from tests.integration.system import running_system, system_config

pytestmark = pytest.mark.integration


async def test_the_api_closes_a_connection_that_says_nothing(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connector_runtime, "IDLE_CONNECTION_TIMEOUT", 1.0)
    async with running_system(system_config(tmp_path, clean_nats.url), clean_nats) as system:
        where = urlsplit(system.api)
        silent = await asyncio.open_connection(where.hostname, where.port)
        slow = await asyncio.open_connection(where.hostname, where.port)
        slow[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        for reader, writer in (silent, slow):
            async with asyncio.timeout(15):  # closed by the server, not held for an hour
                while await reader.read(1 << 16):
                    pass
            writer.close()
        # A client that asks is served as before.
        status, _ = await system.get("/healthz")
        assert status == 200
