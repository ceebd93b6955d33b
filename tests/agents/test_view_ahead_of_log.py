"""A log restored under a running API (an older backup put back while the API ran) ends before
the API's view: the view holds facts the log no longer has and would read nothing new until the
log passed it again. Found by the upgrade audit: /readyz stayed ready with 'lag 0'."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from events import subjects
from events.streams import ensure_streams
from services.bootstrap import Bus
from services.bus.embedded import EmbeddedNats
from services.runners import run_api
from tests.integration.system import eventually, system_config

from .test_view_catch_up import connected
from .view_log import agents, write, write_conversations

pytestmark = pytest.mark.integration


async def test_a_view_ahead_of_a_restored_log_is_not_ready_and_says_restart(
    clean_nats: EmbeddedNats, tmp_path: Path
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    base = f"http://{config.api.host}:{config.api.port}"
    async with connected(clean_nats) as (nc, store), aiohttp.ClientSession() as http:
        await write(store, agents(3))
        await write_conversations(store, "a", 30, 3)
        stop, ready = asyncio.Event(), asyncio.Event()
        api = asyncio.create_task(run_api(config, Bus(nc, store), "t", stop, ready))
        try:
            await asyncio.wait_for(ready.wait(), 30)

            async def readyz() -> tuple[int, Any]:
                async with http.get(base + "/readyz") as r:
                    return r.status, await r.json()

            assert (await readyz())[0] == 200
            # The operator puts back an older, shorter log.
            js = nc.jetstream()
            await js.delete_stream(subjects.EVENTS_STREAM)
            await ensure_streams(js)
            await write(store, agents(2))

            async def refused() -> dict[str, Any] | None:
                status, body = await readyz()
                return body if status == 503 else None

            body = await eventually(refused, timeout=30)
            assert "ahead of the log" in body["reason"] and "restart the API" in body["reason"], body
        finally:
            stop.set()
            await asyncio.wait_for(api, 30)
