"""``relaydesk status`` shows an operator who leads, who is online and what waits where."""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from events.store import EventStore
from services.embedded_nats import EmbeddedNats
from tests.integration.dead_letters import cli
from tests.integration.system import eventually, open_conversation, running_system, system_config

pytestmark = pytest.mark.integration


async def test_status_shows_leaders_agents_and_what_waits(
    clean_nats: EmbeddedNats, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    async with running_system(config, clean_nats, ("intake", "router", "delivery", "api")):
        nc = await nats.connect(clean_nats.url)
        try:
            store = EventStore(nc, nc.jetstream())
            # Nobody on the demo roster speaks Klingon legal: it waits, and status says where.
            await open_conversation(store, "cu_wait", "cv_wait", skills={"legal": 1}, language="tlh")
        finally:
            await nc.drain()

        async def waiting() -> dict[str, object] | None:
            code, out = await cli(capsys, "status", "--json", "--nats-url", clean_nats.url)
            assert code == 0, out
            report: dict[str, object] = json.loads(out)
            routing = report["routing"]
            leaders = report["leaders"]
            assert isinstance(routing, dict) and isinstance(leaders, dict)
            ready = routing["total_waiting"] == 1 and leaders["router"]["current"]
            return report if ready else None

        report = await eventually(waiting, timeout=30, every=0.5)
        routing = report["routing"]
        assert isinstance(routing, dict)
        # Delivery without endpoints idles and takes no lease: status says nobody leads it.
        assert report["leaders"]["delivery"] == {"holder": None, "current": False}  # type: ignore[index]
        assert routing["agents_online"] == 3  # ava, bruno, chen from the demo roster
        (queue,) = routing["queues"]
        assert queue["channel"] == "sms" and queue["skills"] == {"legal": 1} and queue["waiting"] == 1

        code, out = await cli(capsys, "status", "--nats-url", clean_nats.url)
        assert code == 0
        assert "Leaders" in out and "router" in out and "Waiting: 1" in out
        assert "sms legal>=1 tlh" in out
