from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from connectors.chat.connector import WebChatConnector
from connectors.sdk.runtime import ConnectorRuntime
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats

from .helpers import chat_config

StartChat = Callable[..., Any]


@pytest.fixture
async def start_chat(nc: NATS) -> AsyncIterator[StartChat]:
    """Start chat connectors on the shared nats-server (outbound off: see the SDK notes)."""
    runtimes: list[ConnectorRuntime] = []

    async def start(**extra: Any) -> tuple[ConnectorRuntime, str]:
        connector = WebChatConnector.from_config(chat_config(outbound=False, **extra))
        runtime = ConnectorRuntime(connector, nc)
        [url, *_] = await runtime.start()
        runtimes.append(runtime)
        return runtime, url

    yield start
    for runtime in runtimes:
        await runtime.stop()


@pytest.fixture
async def chat(start_chat: StartChat) -> tuple[ConnectorRuntime, str]:
    runtime, url = await start_chat()
    return runtime, url


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, NATS]]:
    """A nats-server of the test's own (for the outbound worker, or to stop it)."""
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.astart()
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)
    await ensure_streams(client.jetstream())
    try:
        yield server, client
    finally:
        with contextlib.suppress(Exception):  # closing a dead transport may raise
            await client.close()
        await server.astop()
