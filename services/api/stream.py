"""``GET /v1/agent/stream``: Server-Sent Events for tools that pull.

First a ``work`` event with the agent's current offers and assignments, then one event per
fact that concerns the agent (offers, assignments, accepts, declines, expiries, transfers,
customer messages on conversations it holds, replies, resolutions, its status), each with
``id: <stream sequence>``. A client that reconnects with ``Last-Event-ID`` (or ``?after=``)
continues after that sequence. A comment line every 15 s keeps proxies from closing the
connection; a revoked token ends the stream, and so does falling 10,000 events behind (an
``event: behind`` frame: reconnect with ``Last-Event-ID``). Streams follow the API process's
one log reader (``LiveState.listen``), so open streams cost the NATS server nothing. With the
operator token, ``?agent=<id>`` follows one agent and no agent follows every conversation and
agent event.

Browsers' ``EventSource`` cannot send an Authorization header; the console reads the stream
with ``fetch`` instead (``services/console``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import structlog
from aiohttp import web

from events import subjects
from events.codec import Undecodable
from events.model import UnknownEvent
from events.store import StoredEvent
from services.api.agent_api import work_json
from services.api.auth import AGENT
from services.api.common import ApiDeps, ApiError
from services.api.tokens import TokenTable, hash_token
from services.delivery.notices import Holders

log = structlog.get_logger(__name__)

KEEPALIVE = 15.0
STREAMS = web.AppKey("agent_streams", set[asyncio.Event])


def event_json(stored: StoredEvent) -> dict[str, Any]:
    event = stored.event
    body: dict[str, Any] = {"type": event.type} if isinstance(event, UnknownEvent) else msgspec.to_builtins(event)
    body.pop("token_hash", None)
    body["seq"] = stored.seq
    parsed = subjects.parse_conversation_subject(stored.subject)
    if parsed and parsed[1] != subjects.CUSTOMER_SCOPE:
        body.setdefault("conversation_id", parsed[1])
    return body


def frame(seq: int | None, kind: str, data: Any) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return (head + f"event: {kind}\ndata: " + msgspec.json.encode(data).decode() + "\n\n").encode()


def install(app: web.Application) -> None:
    """Close every open stream when the app shuts down (else cleanup waits for them)."""
    app[STREAMS] = set()

    async def close_streams(app: web.Application) -> None:
        streams: set[asyncio.Event] = app[STREAMS]
        for closing in tuple(streams):
            closing.set()

    app.on_shutdown.append(close_streams)


def routes(deps: ApiDeps, tokens: TokenTable) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/v1/agent/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        agent_id = request.get(AGENT) or request.query.get("agent")
        if agent_id and agent_id not in deps.live.state.agents:
            raise ApiError(404, f"no agent {agent_id}")
        after_raw = request.headers.get("Last-Event-ID") or request.query.get("after")
        try:
            after = int(after_raw) if after_raw else None
        except ValueError as err:
            raise ApiError(400, "Last-Event-ID / after must be a stream sequence") from err
        token_hash = hash_token(request.headers.get("Authorization", "").partition(" ")[2].strip())
        closing = asyncio.Event()
        request.app[STREAMS].add(closing)
        state = deps.live.state
        holders = Holders({cid: c.agent_id for cid, c in state.conversations.items() if c.agent_id})
        # Follow the API's own log reader (no consumer per stream on the server); a client
        # resuming from an older sequence first gets the gap, read from the log once.
        listener = deps.live.listen()
        caught_up = state.last_seq
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        bound = log.bind(agent_id=agent_id)
        bound.info("api.stream_opened", after=after)
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        sent = after if after is not None else caught_up

        async def send(batch: list[StoredEvent]) -> None:
            nonlocal sent, last_write
            for stored in batch:
                if stored.seq <= sent:
                    continue  # the gap and the live feed overlap
                sent = stored.seq
                if isinstance(stored.event, Undecodable):
                    continue  # quarantined by the log reader: no fact to tell
                concerned = holders.concerned(stored)
                if agent_id is None or agent_id in concerned:
                    await response.write(frame(stored.seq, _kind(stored), event_json(stored)))
                    last_write = loop.time()

        try:
            if agent_id:
                await response.write(frame(caught_up, "work", work_json(state, agent_id)))
            else:
                await response.write(frame(caught_up, "hello", {"seq": caught_up}))
            if after is not None and after < caught_up:
                # In batches: a client resuming from long ago must not load the log into memory.
                async with contextlib.aclosing(deps.live.store.replay(subjects.EVENTS_ALL, after + 1)) as batches:
                    async for gap in batches:
                        await send([stored for stored in gap if stored.seq <= caught_up])
                        if gap and gap[-1].seq >= caught_up:
                            break
            while not closing.is_set():
                if request.get(AGENT) is not None and tokens.agent_for_hash(token_hash) != agent_id:
                    await response.write(frame(None, "revoked", {"error": "token revoked"}))
                    break
                if listener.overflowed:
                    # Too far behind to keep in memory: the client reconnects with Last-Event-ID.
                    await response.write(frame(None, "behind", {"resume_after": sent}))
                    break
                first = await listener.next(timeout=1.0)
                if first is None:
                    if loop.time() - last_write >= KEEPALIVE:
                        await response.write(b": ping\n\n")
                        last_write = loop.time()
                    continue
                await send([first, *listener.drain()])
        except ConnectionResetError:
            pass
        finally:
            request.app[STREAMS].discard(closing)
            listener.close()
            bound.info("api.stream_closed")
        return response

    return r


def _kind(stored: StoredEvent) -> str:
    event = stored.event
    return event.type if isinstance(event, UnknownEvent) else type(event).__struct_config__.tag  # type: ignore[return-value]
