"""A NATS outage of about ten seconds is a blip, not the end: the router (active and
standby) and the whole system under ``serve_all`` stand down while NATS is away, come back
when it is, and route the next conversation. The nats-server is stopped and started again on
the same port with the same store dir, so the log survives, as it would on a real restart."""

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
from tests.integration.system import accept_if_offered, eventually, open_conversation, running_system, system_config

pytestmark = pytest.mark.integration

# Longer than the router's and the delivery service's lease (5 s): the leases lapse during it, so
# the services must stand down and take them again, not just reconnect.
OUTAGE_SECONDS = 7.0


async def outage(server: EmbeddedNats, seconds: float = OUTAGE_SECONDS) -> None:
    """Stop the nats-server, wait, and start it again on the same port and store dir."""
    port = server.port
    await server.astop()
    await asyncio.sleep(seconds)
    server.port = port
    await server.astart()


async def connected_store(url: str) -> EventStore:
    nc = await nats.connect(url)
    await ensure_streams(nc.jetstream())
    return EventStore(nc, nc.jetstream())


@pytest.fixture
async def seeded(clean_nats: EmbeddedNats, config_file: Path) -> AsyncIterator[None]:
    store = await connected_store(clean_nats.url)
    await seed_agents(store, load(config_file, env={}))
    await store.nc.drain()
    yield


async def test_routers_survive_an_outage_and_route_afterwards(
    clean_nats: EmbeddedNats, seeded: None, routers: RouterProcesses, tmp_path: Path
) -> None:
    routers.start("alpha")
    routers.start("beta")  # a hot standby: it must survive too
    await eventually(lambda: leader(clean_nats.url), timeout=STARTING_S)
    for name in ("alpha", "beta"):  # both running, not still starting, when NATS goes away
        await eventually(lambda name=name: routers.started(name), timeout=STARTING_S)
    store = await connected_store(clean_nats.url)
    await open_conversation(store, "cu-before", "cv-before")
    await eventually(lambda: _routed(store, "cv-before"), timeout=20)
    await store.nc.close()

    await outage(clean_nats)

    for name, proc in routers.procs.items():
        assert proc.poll() is None, (
            f"router {name} died in the outage: {(tmp_path / f'{name}.log').read_text()[-3000:]}"
        )
    store = await connected_store(clean_nats.url)
    try:
        await open_conversation(store, "cu-after", "cv-after")
        await eventually(lambda: _routed(store, "cv-after"), timeout=30)
        await asyncio.sleep(1.0)  # a confused pair of leaders would route something twice here
        counts = await routed(store)
        assert counts == {"cv-before": 1, "cv-after": 1}
        assert await leader(clean_nats.url) in ("alpha", "beta")
        for name, proc in routers.procs.items():
            assert proc.poll() is None, f"router {name} died after the outage"
    finally:
        await store.nc.close()


async def test_the_whole_system_survives_an_outage_and_routes_afterwards(
    clean_nats: EmbeddedNats, tmp_path: Path
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    async with running_system(config, clean_nats) as system:
        phone = "+15551239001"
        assert await system.send_sms("SM" + "d" * 32, phone, "Hola, necesito un reembolso de mi factura") == 200
        customer = await eventually(lambda: system.customer(phone), timeout=20)
        await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer), timeout=20))

        await outage(clean_nats)

        phone = "+15551239002"

        async def sms_accepted() -> bool:
            # The connector answers 503 (retry later) until it has reconnected.
            return await system.send_sms("SM" + "e" * 32, phone, "my invoice is wrong, please help") == 200

        await eventually(sms_accepted, timeout=30, every=0.5)
        customer = await eventually(lambda: system.customer(phone), timeout=30)
        conv = await eventually(lambda: system.conversation_of(customer), timeout=30)
        assert conv["agent_id"] in ("ava", "bruno")


async def test_the_delivery_service_survives_an_outage_and_delivers_afterwards(
    clean_nats: EmbeddedNats, tmp_path: Path
) -> None:
    from services.delivery.settings import Endpoint
    from tests.agents.helpers import agent_system, agents_config, holds, receiver

    async with receiver() as hook:
        endpoints = (Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret="s3cret"),)
        config = agents_config(tmp_path, clean_nats.url, endpoints, lease_seconds=1.0)
        async with agent_system(config, clean_nats) as s:
            _, first = await s.open()
            await eventually(holds(lambda: len(hook.ok()) == 1), timeout=20)

            await outage(clean_nats)

            async def opened() -> str | None:
                try:
                    return (await s.open())[1]
                except Exception:  # the test's own connection may still be reconnecting
                    return None

            second = await eventually(opened, timeout=30, every=0.5)
            await eventually(holds(lambda: len(hook.ok()) >= 2), timeout=30)
            ids = [h.json()["conversation"]["id"] for h in hook.ok()]
            assert ids[0] == first and second in ids


async def _routed(store: EventStore, conversation: str) -> bool:
    return conversation in await routed(store)


async def test_a_paused_tail_resumes_once_nats_is_back_and_loses_nothing(clean_nats: EmbeddedNats) -> None:
    """A cold start on a long log pauses its tail (``events.tail``); NATS restarting while it
    is paused must not end the read: the new consumer is made once NATS answers, after the
    last event queued."""
    from events import subjects
    from events.model import MessageReceived
    from events.store import Append
    from tests.integration.test_event_store import opened, received

    store = await connected_store(clean_nats.url)
    try:
        await store.append(Append(opened("cu1", "cv1")))
        first = [Append(received("cu1", "cv1", n)) for n in range(1_000)]
        await store.append_many(first)
        tail = await store.tail(subjects.EVENTS_ALL, 1)
        tail.pause_at, tail.resume_at = 300, 100
        await eventually(lambda: _paused(tail), timeout=10)
        await outage(clean_nats, seconds=2.0)
        got = [stored.seq for stored in tail.drain()]  # below resume_at: it tries to resume at once
        # Each with a message id: an append retried after a lost answer is stored once.
        more = [Append(received("cu1", "cv1", n), msg_id=f"more-{n}") for n in range(1_000, 1_200)]
        await eventually(lambda: _appended(store, more), timeout=30)  # the client reconnected
        while len(got) < 1 + len(first) + len(more):
            if not await tail.wait(timeout=20):
                raise AssertionError(f"the tail stopped after {len(got)} events (pauses: {tail.pauses})")
            got += [stored.seq for stored in tail.drain(limit=100)]
        await tail.close()
        assert got == list(range(1, 1 + len(first) + len(more) + 1))
        assert isinstance((await store.read_customer("cu1"))[-1].event, MessageReceived)
    finally:
        await store.nc.close()


async def _paused(tail: object) -> bool:
    return getattr(tail, "sub", True) is None


async def _appended(store: EventStore, items: list[object]) -> bool:
    try:
        done = await store.append_many(items)  # type: ignore[arg-type]
    except (nats.errors.Error, TimeoutError):  # NATS not back yet: asked again by ``eventually``
        return False
    return all(isinstance(seq, int) for seq in done)
