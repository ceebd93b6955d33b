"""A service's own NATS connection closing at shutdown is not a warning: a clean Ctrl-C of
`relaydesk up` logged ``nats.disconnected`` at warning level once per connection (about ten),
which reads like an outage. A server that goes away is still warned of."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from services.bootstrap import connect_nats
from services.embedded_nats import EmbeddedNats

pytestmark = pytest.mark.integration


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    """Every log line, debug included."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


def _disconnects(lines: list[dict[str, Any]]) -> list[str]:
    return [str(line["log_level"]) for line in lines if line["event"] == "nats.disconnected"]


async def test_closing_our_own_connection_is_no_warning_but_losing_the_server_is(
    tmp_path: Path, lines: list[dict[str, Any]]
) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "js")
    url = server.start()
    try:
        nc = await connect_nats(url, name="closing-test")
        await nc.drain()
        assert _disconnects(lines) == ["debug"]

        lines.clear()
        nc = await connect_nats(url, name="outage-test")
        server.stop()
        async with asyncio.timeout(20):
            while not _disconnects(lines):
                await asyncio.sleep(0.05)
        await nc.close()
        assert _disconnects(lines)[0] == "warning"
    finally:
        server.stop()
