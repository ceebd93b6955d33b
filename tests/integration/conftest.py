"""Fixtures shared by the integration tests: routers as processes, and the dead-letter tests' private server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from events.store import EventStore
from events.streams import ensure_streams
from services.bootstrap import seed_agents
from services.bus.embedded import EmbeddedNats
from services.config import Config
from tests.integration.dead_letters import private_nats, quiet_cli_logging
from tests.integration.fake_twilio import FakeTwilio, fake_twilio_server
from tests.integration.routers import CONFIG, RouterProcesses


@pytest.fixture
async def seeded_store(clean_nats: EmbeddedNats) -> AsyncIterator[EventStore]:
    """A store on this test's own server, its streams made and the default roster seeded (not
    named ``store``: that is tests/conftest.py's, on the session's server)."""
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    s = EventStore(nc, nc.jetstream())
    await seed_agents(s, Config())
    yield s
    await nc.drain()


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
    """The test server's URL, a connection and a store, streams made (intake's durable takes all of rd.inbound.>)."""
    async with private_nats(clean_nats) as found:
        yield found


@pytest.fixture
async def fake_twilio() -> AsyncIterator[tuple[FakeTwilio, str]]:
    """A fake Twilio Messages API on a free port: (the fake, its base URL)."""
    async with fake_twilio_server() as found:
        yield found
