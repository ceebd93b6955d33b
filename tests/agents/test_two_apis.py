"""Two API processes behind a load balancer: a command sent to one right after the other
answered a write decides on a view that holds that write (services/api/caught_up.py).

Found by a scale-out audit: an agent created on one API was ``404 no agent`` to a status change
sent at once to the other, a conversation another process had opened and offered was ``409 …
is resolved`` to an accept there, and an agent's accept of an offer her console had shown was
403 where the view had not folded the offer yet, and a token issued on one was 401 on the
other. Here the second API's log reader is held at a
gate while the first writes, so the second's view is behind for as long as the test wants."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from events.model import AgentOffered, ConversationOpened, DecisionReason, Requirements, RoutingRequested
from events.store import Append, EventStore
from events.streams import ensure_streams
from services.api.logreader import LogReader
from services.api.readmodel import LiveState
from services.bootstrap import Bus
from services.bus.embedded import EmbeddedNats, free_port
from services.config import Config
from services.runners import run_api
from tests.integration.system import API_TOKEN, eventually, system_config

from .view_log import agents, write

pytestmark = pytest.mark.integration

OPERATOR = {"Authorization": f"Bearer {API_TOKEN}"}


class HeldView:
    """Holds the log reader of the API on connection ``nc`` at a gate while ``open`` is clear,
    and says when a request of that API waits for its view to reach an event (``waiting``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, nc: NATS) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.holding = asyncio.Event()  # its reader waits at the closed gate
        self.waiting = asyncio.Event()  # a request waits for the view to reach an event
        fetch, wait_for = LogReader._fetch, LiveState.wait_for

        async def held_fetch(reader: LogReader, last: int) -> Any:
            if reader.store.nc is nc and not self.open.is_set():
                self.holding.set()
                await self.open.wait()
                self.holding.clear()
            return await fetch(reader, last)

        async def noted_wait_for(live: LiveState, seq: int, timeout: float = 5.0) -> bool:
            if live.store.nc is nc and live.position < seq:
                self.waiting.set()
            return await wait_for(live, seq, timeout)

        monkeypatch.setattr(LogReader, "_fetch", held_fetch)
        monkeypatch.setattr(LiveState, "wait_for", noted_wait_for)

    async def close(self) -> None:
        """Close the gate and wait until the reader stands at it (its fetch in flight returns
        first): from then on this API's view folds nothing until ``release``."""
        self.open.clear()
        self.waiting.clear()
        await asyncio.wait_for(self.holding.wait(), 30)

    async def answered_while_behind(self, request: asyncio.Task[tuple[int, Any]]) -> tuple[int, Any]:
        """The answer to ``request``, sent while the view is held: the gate opens once the
        request waits for the view (the fix), or after it answered without waiting (the bug)."""
        waiting = asyncio.create_task(self.waiting.wait())
        try:
            await asyncio.wait({request, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            answered_first = request.done()
        finally:
            waiting.cancel()
        self.open.set()
        status, body = await asyncio.wait_for(request, 30)
        assert not answered_first, f"answered from a view that had not read the write: {status} {body}"
        return status, body


@dataclass
class Api:
    base: str
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] = OPERATOR
    ) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json()


@contextlib.asynccontextmanager
async def api_process(config: Config, nc: NATS, http: aiohttp.ClientSession) -> AsyncIterator[Api]:
    """One API process on its own NATS connection and port (as ``relaydesk api``)."""
    config = msgspec.structs.replace(config, api=msgspec.structs.replace(config.api, port=free_port()))
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_api(config, Bus(nc, EventStore(nc, nc.jetstream())), API_TOKEN, stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield Api(f"http://{config.api.host}:{config.api.port}", http)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def connection(server: EmbeddedNats) -> AsyncIterator[NATS]:
    nc = await nats.connect(server.url)
    try:
        yield nc
    finally:
        await nc.drain()


def offered(customer: str, conversation: str, agent: str) -> AgentOffered:
    now = datetime.now(UTC)
    return AgentOffered(
        at=now,
        customer_id=customer,
        conversation_id=conversation,
        agent_id=agent,
        expires_at=now + timedelta(hours=1),
        reason=DecisionReason(rule="test"),
    )


async def test_a_command_sent_to_the_other_api_right_after_a_write_sees_that_write(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    async with (
        connection(clean_nats) as writer,
        connection(clean_nats) as nc_a,
        connection(clean_nats) as nc_b,
        aiohttp.ClientSession() as http,
    ):
        js = writer.jetstream()
        await ensure_streams(js)
        store = EventStore(writer, js)  # what intake and the router write
        await write(store, agents(2))
        view_b = HeldView(monkeypatch, nc_b)
        async with api_process(config, nc_a, http) as a, api_process(config, nc_b, http) as b:
            # A token issued on A; the agent's console calls B with it at once.
            await view_b.close()
            status, issued = await a.call("POST", "/v1/agents/ag1/tokens", {"label": "console"})
            assert status == 201, issued
            ava = {"Authorization": f"Bearer {issued['token']}"}
            request = asyncio.create_task(b.call("GET", "/v1/agent/me", headers=ava))
            status, body = await view_b.answered_while_behind(request)
            assert status == 200 and body["actor"] == "agent:ag1", body
            # A token nobody issued is still refused (after the same catch-up).
            forged = {"Authorization": "Bearer rdat_" + "x" * 43}
            assert (await b.call("GET", "/v1/agent/me", headers=forged))[0] == 401

            # An agent registered on A; her status set on B at once.
            await view_b.close()
            status, body = await a.call("PUT", "/v1/agents/zoe", {"name": "Zoe", "capacity": {"sms": 2}})
            assert status == 201, body
            request = asyncio.create_task(b.call("POST", "/v1/agents/zoe/status", {"status": "available"}))
            status, body = await view_b.answered_while_behind(request)
            assert status == 200 and body["status"] == "available", body

            # A conversation opened and offered to ag1 elsewhere; her accept reaches B.
            customer, cid = "cu" + uuid.uuid4().hex[:10], "cv" + uuid.uuid4().hex[:10]
            await view_b.close()
            now = datetime.now(UTC)
            seq = await store.append(
                Append(
                    ConversationOpened(
                        at=now, customer_id=customer, conversation_id=cid, channel="sms", contact="+15550000001"
                    ),
                    expected=0,
                )
            )
            seq = await store.append(
                Append(
                    RoutingRequested(
                        at=now, customer_id=customer, conversation_id=cid, channel="sms", requirements=Requirements()
                    ),
                    expected=seq,
                )
            )
            await store.append(Append(offered(customer, cid, "ag1"), expected=seq))
            request = asyncio.create_task(b.call("POST", f"/v1/conversations/{cid}/accept", {}, headers=ava))
            status, body = await view_b.answered_while_behind(request)
            assert status == 200 and body["conversation"]["status"] == "assigned", body

            # A conversation B shows waiting is offered to ag1 (her console, on A, shows it): her
            # accept reaches B before B folded the offer.
            customer, cid = "cu" + uuid.uuid4().hex[:10], "cv" + uuid.uuid4().hex[:10]
            now = datetime.now(UTC)
            seq = await store.append(
                Append(
                    ConversationOpened(
                        at=now, customer_id=customer, conversation_id=cid, channel="sms", contact="+15550000002"
                    ),
                    expected=0,
                )
            )
            last = await store.append(
                Append(
                    RoutingRequested(
                        at=now, customer_id=customer, conversation_id=cid, channel="sms", requirements=Requirements()
                    ),
                    expected=seq,
                )
            )

            async def b_shows_it_waiting() -> bool:
                status, body = await b.call("GET", f"/v1/conversations/{cid}")
                return status == 200 and body["status"] == "waiting"

            await eventually(b_shows_it_waiting, timeout=30)
            await view_b.close()
            await store.append(Append(offered(customer, cid, "ag1"), expected=last))

            async def a_shows_the_offer() -> bool:
                status, body = await a.call("GET", f"/v1/conversations/{cid}")
                return status == 200 and body["status"] == "offered"

            await eventually(a_shows_the_offer, timeout=30)
            request = asyncio.create_task(b.call("POST", f"/v1/conversations/{cid}/accept", {}, headers=ava))
            status, body = await view_b.answered_while_behind(request)
            assert status == 200 and body["conversation"]["status"] == "assigned", body
