"""A connector installed as its own package runs as ``relaydesk connector <name>``.

An installed distribution is, to Python, a ``<name>.dist-info`` folder on the path holding
``entry_points.txt``; this test lays one down for the Telegram example (what
``pip install relaydesk-telegram`` would leave) and runs the real CLI in a new process: no
monkeypatching of the discovery."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import aiohttp
import nats
import pytest

from connectors.sdk import registry
from events import subjects
from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.system import eventually

from .connector import SECRET_HEADER, TelegramConnector
from .test_conformance import BOT_TOKEN, SECRET, update

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def installed_package(site: Path) -> Path:
    dist = site / "relaydesk_telegram-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: relaydesk-telegram\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[relaydesk.connectors]\ntelegram = tests.connectors.example_telegram.connector:TelegramConnector\n"
    )
    return site


async def inbound_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(subjects.INBOUND_STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


async def test_an_installed_connector_package_runs_from_the_cli(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    site = installed_package(tmp_path / "site")
    port = free_port()
    config = tmp_path / "relaydesk.toml"
    config.write_text(f'[connectors.telegram]\nport = {port}\nbot_token = "{BOT_TOKEN}"\nsecret_token = "{SECRET}"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "RELAYDESK_NATS_URL": clean_nats.url}
    cli = (sys.executable, "-m", "services.cli", "connector")
    listing = await asyncio.create_subprocess_exec(
        *cli, "nope", "--config", str(config), env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(listing.communicate(), 60)
    assert listing.returncode != 0 and "telegram" in err.decode(), err.decode()

    log = (tmp_path / "connector.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *cli, "telegram", "--config", str(config), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}/telegram/webhook"
        headers = {SECRET_HEADER: SECRET, "Content-Type": "application/json"}

        async def post(body: bytes) -> int | None:
            try:
                async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
                    return r.status
            except aiohttp.ClientConnectionError:
                return None  # not listening yet

        assert await eventually(lambda: post(update(update_id=5001)), timeout=30) == 200
        assert await post(update(update_id=5001)) == 200  # Telegram retrying: still one message
        assert await inbound_messages(clean_nats.url) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
        log.close()
    assert code == 0, (tmp_path / "connector.log").read_text()


def test_entry_point_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `pip install relaydesk-telegram` does, declared in its pyproject.toml:
    [project.entry-points."relaydesk.connectors"] telegram = "...connector:TelegramConnector"."""
    ep = EntryPoint("telegram", "tests.connectors.example_telegram.connector:TelegramConnector", registry.GROUP)

    def with_telegram(*, group: str) -> list[EntryPoint]:
        return [*entry_points(group=group), ep]

    monkeypatch.setattr(registry, "entry_points", with_telegram)
    assert "telegram" in registry.available()
    assert registry.load("telegram") is TelegramConnector
    assert TelegramConnector.from_config({"bot_token": BOT_TOKEN, "port": "9000"}).settings.port == 9000
