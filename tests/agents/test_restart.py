"""A restart rebuilds what the agents' side knew from the log and the KV buckets: tokens
(issued and revoked) still hold, and facts already delivered are not delivered again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from services.bus.embedded import EmbeddedNats
from services.delivery.settings import Endpoint
from tests.fake_http import serving_posts

from .helpers import AgentSystem, agent_system, agents_config, eventually, holds, receiver

pytestmark = pytest.mark.integration


async def test_tokens_and_delivery_checkpoint_survive_a_restart(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    async with receiver() as hook:
        endpoints = (Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret="s3cret"),)
        config = agents_config(tmp_path, clean_nats.url, endpoints)
        async with agent_system(config, clean_nats) as s:
            kept, _ = await s.issue_token("ava")
            revoked, revoked_id = await s.issue_token("ava")
            status, _ = await s.call("DELETE", f"/v1/agents/ava/tokens/{revoked_id}")
            assert status == 200
            _, first = await s.open()
            await eventually(holds(lambda: len(hook.ok()) == 1))
            # A live stream left open must not hold up the shutdown.
            stream = await s.system.http.get(s.api + "/v1/agent/stream", headers={"Authorization": f"Bearer {kept}"})
            assert stream.status == 200
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 10
        stream.release()

        async with agent_system(config, clean_nats) as s:
            status, work = await s.call("GET", "/v1/agent/work", kept)
            assert status == 200 and [c["id"] for c in work["offers"]] == [first]
            status, _ = await s.call("GET", "/v1/agent/work", revoked)
            assert status == 401
            await asyncio.sleep(1.0)
            assert len(hook.seen) == 1  # the first offer is not delivered again
            _, second = await s.open()
            await eventually(holds(lambda: len(hook.ok()) == 2))
            assert hook.ok()[1].json()["conversation"]["id"] == second
            assert len(await s.deliveries("delivered")) == 2


async def test_a_standby_delivery_service_takes_over_without_sending_twice(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    async with receiver() as hook:
        endpoints = (Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret="s3cret"),)
        config = agents_config(tmp_path, clean_nats.url, endpoints, lease_seconds=1.0)
        async with agent_system(config, clean_nats, services=("router", "api")) as s:
            stops = {"a": asyncio.Event(), "b": asyncio.Event()}
            a = s.delivery_service(config, "a")
            first = asyncio.create_task(a.run(stops["a"]))
            # "b" starts once "a" leads: after a fixed 0.5 s, a slow start of "a" on a loaded
            # machine let "b" take the lease, and the test no longer saw a standby take over.
            await eventually(holds(lambda: a.role == "leader"), timeout=20)
            second = asyncio.create_task(s.delivery_service(config, "b").run(stops["b"]))
            try:
                _, one = await s.open()
                await eventually(holds(lambda: len(hook.ok()) == 1))
                stops["a"].set()
                await asyncio.wait_for(first, 10)
                _, two = await s.open()

                def delivered_by_the_standby() -> bool:
                    if second.done():  # a crashed standby: its error, not a timeout, is the finding
                        raise AssertionError(f"the standby stopped: {second.exception()!r}")
                    return len(hook.ok()) >= 2

                await eventually(holds(delivered_by_the_standby), timeout=20)
                await asyncio.sleep(1.0)
                # Not [one, one, two]: the stopping instance recorded its delivery of one before it
                # let go, so the standby did not send it again.
                assert [h.json()["conversation"]["id"] for h in hook.seen] == [one, two]
            finally:
                for stop in stops.values():
                    stop.set()
                await asyncio.gather(first, second, return_exceptions=True)


async def test_a_stopping_delivery_service_finishes_the_delivery_in_flight(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    # The stop comes while the agent's tool is still answering: the stopping instance waits for
    # the answer and records it, so the instance that takes over does not send it again.
    arrived: list[str] = []
    answering = asyncio.Event()

    async def slow_tool(request: web.Request) -> web.Response:
        arrived.append((await request.json())["conversation"]["id"])
        answering.set()
        await asyncio.sleep(1.5)
        return web.Response(status=200)

    async with serving_posts({"/hook": slow_tool}) as base:
        endpoints = (Endpoint(kind="webhook", id="ava-hook", agent="ava", url=base + "/hook", secret="s3cret"),)
        config = agents_config(tmp_path, clean_nats.url, endpoints, lease_seconds=1.0)
        async with agent_system(config, clean_nats, services=("router", "api")) as s:
            stop_a, stop_b = asyncio.Event(), asyncio.Event()
            a = s.delivery_service(config, "a")
            first = asyncio.create_task(a.run(stop_a))
            await eventually(holds(lambda: a.role == "leader"), timeout=10)
            _, one = await s.open()
            await asyncio.wait_for(answering.wait(), 20)
            stop_a.set()  # while the tool is still answering
            await asyncio.wait_for(first, 15)
            second = asyncio.create_task(s.delivery_service(config, "b").run(stop_b))
            try:
                delivered = await eventually(lambda: delivered_records(s), timeout=20)
                await asyncio.sleep(2.0)  # time for a second send, if one were coming
                assert arrived == [one]
                assert [(d["conversation_id"], len(d["attempts"])) for d in delivered] == [(one, 1)]
            finally:
                stop_b.set()
                await asyncio.gather(second, return_exceptions=True)


async def delivered_records(s: AgentSystem) -> list[dict[str, Any]] | None:
    found = await s.deliveries("delivered")
    return found or None
