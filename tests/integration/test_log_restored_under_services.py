"""A log restored or replaced under a running router or delivery service (an older backup put
back while they ran) ends before what they folded. Found by the upgrade audit: they went on
from their own position, deciding on facts the log no longer had and reading nothing new. Now
each stops, saying why, so that its supervisor starts it again on the log as it is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from events import subjects
from events.store import EventStore
from events.streams import ensure_streams
from router.policy import RouterPolicy
from services.bootstrap import seed_agents
from services.bus.connection import ServiceFailed
from services.bus.embedded import EmbeddedNats
from services.config import Config
from services.delivery.service import DeliveryService
from services.delivery.settings import DeliverySettings, Endpoint
from services.router_runner import RouterRunner
from tests.integration.system import open_conversation

pytestmark = pytest.mark.integration


async def test_a_router_and_a_delivery_service_stop_when_the_log_ends_before_them(
    clean_nats: EmbeddedNats, tmp_path: Path
) -> None:
    stop = asyncio.Event()
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        store = EventStore(nc, js)
        await seed_agents(store, Config())
        for n in range(3):
            await open_conversation(store, f"cu{n}", f"cv{n}")
        router = RouterRunner(nc, RouterPolicy(), tick=0.05, lease_ttl=1.0, use_snapshot=False)
        hook = Endpoint(kind="webhook", id="hook", agent="*", url="http://127.0.0.1:9/hook", secret="s" * 32)
        settings = DeliverySettings(endpoints=(hook,), snapshot_every=10**9)
        delivery = DeliveryService(
            store, settings, console_url="http://127.0.0.1:9/console", api_url="http://127.0.0.1:9"
        )
        routing = asyncio.create_task(router.run(stop))
        delivering = asyncio.create_task(delivery.run(stop))
        await asyncio.wait_for(router.ready.wait(), 30)
        end = await store.last_seq()
        async with asyncio.timeout(30):  # a deadline: a delivery that never folds it fails, not hangs
            while delivery.facts.state.last_seq < end:
                await asyncio.sleep(0.05)

        # The operator puts back an older, shorter log under them.
        await js.delete_stream(subjects.EVENTS_STREAM)
        await ensure_streams(js)
        await seed_agents(store, Config())

        for task, name in ((routing, "router"), (delivering, "delivery")):  # each asks every 5 s
            with pytest.raises(ServiceFailed) as stopped:
                await asyncio.wait_for(task, 30)
            assert f"{name}: the log ends at event" in stopped.value.reason
            assert "restored or replaced under it" in stopped.value.reason
    finally:
        stop.set()
        await nc.close()
