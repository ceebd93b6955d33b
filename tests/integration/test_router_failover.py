"""The router as real processes (``relaydesk router``) over a real nats-server: killed with
SIGKILL, restarted, and replaced by a hot standby in the middle of a burst. Whatever
happens, every conversation is routed exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from events.store import EventStore
from events.streams import ensure_streams
from services.bootstrap import seed_agents
from services.bus.embedded import EmbeddedNats
from services.config import load
from tests.integration.routers import STARTING_S, RouterProcesses, leader, routed
from tests.integration.system import eventually, open_conversation

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(clean_nats: EmbeddedNats, config_file: Path) -> AsyncIterator[EventStore]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    s = EventStore(nc, nc.jetstream())
    await seed_agents(s, load(config_file, env={}))
    yield s
    await nc.drain()


async def open_many(store: EventStore, prefix: str, count: int) -> None:
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with gate:
            await open_conversation(store, f"{prefix}cu{i}", f"{prefix}cv{i}")

    await asyncio.gather(*(one(i) for i in range(count)))


async def test_killed_router_restarts_and_reassigns_nothing(store: EventStore, routers: RouterProcesses) -> None:
    routers.start("first")
    await open_many(store, "a", 20)
    await eventually(lambda: _all_routed(store, 20), timeout=STARTING_S)
    before = await routed(store)

    routers.kill("first")  # SIGKILL: no snapshot saved, lease left to lapse
    await open_many(store, "b", 10)  # arrives while no router runs
    routers.start("second")
    await eventually(lambda: _all_routed(store, 30), timeout=STARTING_S)
    await asyncio.sleep(1.0)  # several ticks in which a confused router could re-decide

    after = await routed(store)
    assert all(count == 1 for count in after.values()), after
    assert {cid: n for cid, n in after.items() if cid in before} == before


async def test_standby_takes_over_during_a_burst_and_routes_each_once(
    clean_nats: EmbeddedNats, store: EventStore, routers: RouterProcesses
) -> None:
    routers.start("alpha")
    routers.start("beta")
    first = await eventually(lambda: leader(clean_nats.url), timeout=STARTING_S)
    standby = "beta" if first == "alpha" else "alpha"
    await eventually(lambda: routers.started(standby), timeout=STARTING_S)  # a hot standby, following the log
    burst = asyncio.create_task(open_many(store, "c", 500))
    await eventually(lambda: _routed_at_least(store, 20), timeout=60)
    routers.kill(first)  # the active router dies mid-burst
    await burst
    await eventually(lambda: _leader_other_than(clean_nats.url, first), timeout=20)
    await eventually(lambda: _all_routed(store, 500), timeout=90, every=0.5)
    counts = await routed(store)
    assert len(counts) == 500
    assert set(counts.values()) == {1}


async def _all_routed(store: EventStore, n: int) -> bool:
    counts = await routed(store)
    return len(counts) >= n


async def _routed_at_least(store: EventStore, n: int) -> bool:
    return len(await routed(store)) >= n


async def _leader_other_than(url: str, name: str) -> bool:
    current = await leader(url)
    return current is not None and current != name
