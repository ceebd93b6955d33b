"""Fixtures shared by the integration tests: routers as processes, and the dead-letter tests' private server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from events.store import EventStore
from services.embedded_nats import EmbeddedNats, free_port
from tests.integration.dead_letters import private_nats, quiet_cli_logging
from tests.integration.fake_twilio import FakeTwilio
from tests.integration.routers import CONFIG, RouterProcesses


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "relaydesk.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def routers(clean_nats: EmbeddedNats, config_file: Path, tmp_path: Path) -> Iterator[RouterProcesses]:
    procs = RouterProcesses(clean_nats.url, config_file, tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def quiet_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's logs kept out of captured output (the dead-letter tests read the CLI's)."""
    quiet_cli_logging(monkeypatch)


@pytest.fixture
async def private(clean_nats: EmbeddedNats) -> AsyncIterator[tuple[str, NATS, EventStore]]:
    """A private nats-server's URL, a connection and a store (dead-letter tests)."""
    async with private_nats(clean_nats) as found:
        yield found


@pytest.fixture
async def fake_twilio() -> AsyncIterator[tuple[FakeTwilio, str]]:
    """A fake Twilio Messages API on a free port: (the fake, its base URL)."""
    fake = FakeTwilio()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", fake.create)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()
