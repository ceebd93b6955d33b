"""``relaydesk_leader{lease, instance}``: who routes and who delivers, on /metrics.

Found by an observability audit: the queue gauges are set by the leading router alone, so when
every router stopped (or none held the lease) they vanished, and /metrics read like nobody
waiting while conversations piled up. Each router and delivery instance now says 1 while it
leads, 0 while it stands by, and drops its series when it stops: an alert on "no series at 1
for a lease" fires exactly when nobody routes or delivers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from events.store import EventStore
from services.bus.embedded import EmbeddedNats
from services.config import Config
from services.delivery.service import DeliveryService
from services.delivery.settings import DeliverySettings, Endpoint
from services.router_runner import RouterRunner
from tests.integration.system import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def store(seeded_store: EventStore) -> EventStore:
    return seeded_store


def leader(lease: str, instance: str) -> float | None:
    return REGISTRY.get_sample_value("relaydesk_leader", {"lease": lease, "instance": instance})


@contextlib.asynccontextmanager
async def running(url: str, make, run_name: str = "run") -> AsyncIterator[tuple[object, asyncio.Event]]:  # type: ignore[no-untyped-def]
    nc = await nats.connect(url)
    service = make(nc)
    stop = asyncio.Event()
    task = asyncio.create_task(getattr(service, run_name)(stop))
    try:
        yield service, stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await nc.close()


async def test_each_router_says_whether_it_leads_and_a_stopped_one_says_nothing(
    clean_nats: EmbeddedNats, store: EventStore
) -> None:
    def router(name: str):  # type: ignore[no-untyped-def]
        return lambda nc: RouterRunner(nc, Config().router, tick=0.05, lease_ttl=1.0, instance_id=name)

    async with running(clean_nats.url, router("gauge-a")) as (first, first_stop):
        assert isinstance(first, RouterRunner)
        await asyncio.wait_for(first.leading.wait(), 10)
        assert leader("router", "gauge-a") == 1
        async with running(clean_nats.url, router("gauge-b")) as (second, _):
            assert isinstance(second, RouterRunner)
            await eventually(lambda: _ready(second), timeout=10)
            assert leader("router", "gauge-b") == 0  # a hot standby, said as one
            first_stop.set()  # the leader goes: the standby takes the lease
            await eventually(lambda: _value("router", "gauge-b", 1), timeout=15)
            await eventually(lambda: _value("router", "gauge-a", None), timeout=15)
        # Nobody runs: no series at 1 for the lease, so "nobody routes" is visible.
        assert leader("router", "gauge-b") is None


async def test_each_delivery_instance_says_whether_it_leads(clean_nats: EmbeddedNats, store: EventStore) -> None:
    endpoint = Endpoint(kind="webhook", agent="ava", url="http://127.0.0.1:9/unused", secret="s" * 32)
    settings = msgspec.structs.replace(DeliverySettings(), endpoints=(endpoint,), lease_seconds=1.0)

    def delivery(name: str):  # type: ignore[no-untyped-def]
        def make(nc: NATS) -> DeliveryService:
            s = EventStore(nc, nc.jetstream())
            return DeliveryService(s, settings, console_url="http://x/console", api_url="http://x", instance_id=name)

        return make

    async with running(clean_nats.url, delivery("dgauge-a")) as (_first, first_stop):
        await eventually(lambda: _value("delivery", "dgauge-a", 1), timeout=15)
        async with running(clean_nats.url, delivery("dgauge-b")):
            await eventually(lambda: _value("delivery", "dgauge-b", 0), timeout=15)
            first_stop.set()
            await eventually(lambda: _value("delivery", "dgauge-b", 1), timeout=15)
            await eventually(lambda: _value("delivery", "dgauge-a", None), timeout=15)
    assert leader("delivery", "dgauge-b") is None


async def _ready(runner: RouterRunner) -> bool:
    return runner.ready.is_set()


async def _value(lease: str, instance: str, wanted: float | None) -> bool:
    return leader(lease, instance) == wanted
