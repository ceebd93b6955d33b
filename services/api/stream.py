"""``GET /v1/agent/stream``: Server-Sent Events for tools that pull.

What the live stream sends, exactly: first a ``work`` frame (the agent's offers and
assignments), then, for every event ``e`` of the log after the position that frame reflects,
in log order, one frame ``id: <e's sequence>`` when ``e`` concerns the agent given who held
each conversation just before ``e`` (``Holders.concerned``): an offer, assignment, accept,
decline, expiry, release or transfer naming her; any event on a conversation offered or
assigned to her at that moment (customer messages, replies, notes, its resolution, its
transfer away); the events of her own agent record (status, profile, tokens). A comment
line every 15 s keeps proxies from closing the connection; a revoked token or the agent's
deactivation ends the stream, and so does falling 10,000 events behind (an ``event: behind`` frame: reconnect with
``Last-Event-ID``).

Resuming with ``Last-Event-ID`` (or ``?after=``) sends exactly the frames a client that
stayed connected received after that id, in order, each id greater than the last, then
follows live: the log after that id is read once, and who held what at that id comes from
``HolderJournal`` (the current holders with the recent changes undone). The ``work`` frame
of a resumed stream carries no ``id`` (it must not move the client's position past frames
still to come); its ``seq`` says which position its lists reflect. A resume from before what
the journal remembers (``[api]`` keeps the last 100,000 changes of who holds what, and none
from before the API's last start) cannot be exact: the stream says so with an ``event:
reset`` frame and starts afresh (a new ``work`` frame, live from now).

Streams follow the API process's one log reader (``LiveState.listen``), so open streams cost
the NATS server nothing. With the operator token, ``?agent=<id>`` follows one agent and no
agent follows every conversation and agent event.

A ``MessageReceived`` frame's attachments carry the same short-lived signed links as the
timeline (``/v1/attachments/<token>``, made for the stream's caller, see
``services/api/attachments.py``), never the stored location (``nats-object://…``, a Graph
URL) a browser cannot open.

Browsers' ``EventSource`` cannot send an Authorization header; the console reads the stream
with ``fetch`` instead (``services/console``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import msgspec
import structlog
from aiohttp import web

from events import subjects
from events.codec import Undecodable
from events.model import MessageReceived, UnknownEvent
from events.skips import count_skip
from events.store import StoredEvent
from services.api import attachments, workspace
from services.api.agent_api import names_ready, work_json
from services.api.auth import AGENT
from services.api.common import ACTOR, MAX_SEQ, ApiDeps, ApiError
from services.api.readmodel import LiveState
from services.api.tokens import TokenTable, hash_token
from services.delivery.notices import Holders

log = structlog.get_logger(__name__)

KEEPALIVE = 15.0
# Changes of who holds what remembered for exact resumes (~150 bytes each).
RESUME_CHANGES_KEPT = 100_000
STREAMS = web.AppKey("agent_streams", set[asyncio.Event])
# Where an event on another customer's conversation reusing a held one's id is counted.
OTHER_CUSTOMER = "api.stream.other_customer"


def event_json(stored: StoredEvent) -> dict[str, Any]:
    event = stored.event
    body: dict[str, Any] = {"type": event.type} if isinstance(event, UnknownEvent) else msgspec.to_builtins(event)
    body.pop("token_hash", None)
    body["seq"] = stored.seq
    parsed = subjects.parse_conversation_subject(stored.subject)
    if parsed and parsed[1] != subjects.CUSTOMER_SCOPE:
        body.setdefault("conversation_id", parsed[1])
    return body


def with_attachment_links(stored: StoredEvent, body: dict[str, Any], links: attachments.Links, actor: str) -> None:
    """A customer message's attachments as the timeline shows them: each ``url`` a signed
    link for ``actor`` (or null when there is nothing to fetch), as ``Links.with_urls`` does."""
    if not isinstance(stored.event, MessageReceived) or not body.get("attachments"):
        return
    body["attachments"] = list(body["attachments"])  # to_builtins keeps the struct's tuple
    entry = {
        "kind": "message_in",
        "customer_id": stored.event.customer_id,
        "seq": stored.seq,
        "message_id": stored.event.message_id,
        "detail": {"attachments": body["attachments"]},
    }
    links.with_urls([entry], actor)  # rewrites body["attachments"] in place


def frame(seq: int | None, kind: str, data: Any) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return (head + f"event: {kind}\ndata: " + msgspec.json.encode(data).decode() + "\n\n").encode()


class HolderJournal:
    """Who holds each conversation (offered or assigned) after every event of the log, as the
    live streams reckon it (``Holders``), and the last ``keep`` changes of it, so that a
    resumed stream knows who held what at its ``Last-Event-ID``: the current holders with the
    changes after that id undone. Fed by the API's log reader; its holders go into the view's
    snapshot, its changes do not (a resume from before the API started is not exact)."""

    def __init__(self, keep: int = RESUME_CHANGES_KEPT) -> None:
        self.holders = Holders()
        self.position = 0  # the last sequence applied
        self.exact_from = 0  # holders_at(after) is known for every after >= this
        self.changes: deque[tuple[int, str, str | None]] = deque()  # (seq, conversation, holder before)
        self.keep = keep

    def apply(self, stored: StoredEvent) -> None:
        self.position = max(self.position, stored.seq)
        parsed = subjects.parse_conversation_subject(stored.subject)
        cid = parsed[1] if parsed else ""
        before, skipped = self.holders.holder.get(cid), self.holders.other_customer
        self.holders.concerned(stored)
        if self.holders.other_customer != skipped:
            count_skip(OTHER_CUSTOMER)  # counted here once, not by every stream
        if self.holders.holder.get(cid) != before:
            self.changes.append((stored.seq, cid, before))
            if len(self.changes) > self.keep:
                self.exact_from = self.changes.popleft()[0]

    def holders_at(self, after: int) -> dict[str, str] | None:
        """Who held what just after event ``after`` (None: too long ago to know)."""
        if after < self.exact_from or after > self.position:
            return None
        held = dict(self.holders.holder)
        for seq, cid, before in reversed(self.changes):
            if seq <= after:
                break
            if before is None:
                held.pop(cid, None)
            else:
                held[cid] = before
        return held

    def dump(self) -> bytes:
        return msgspec.msgpack.encode((self.position, self.holders.holder))

    def load(self, data: bytes) -> None:
        position, held = msgspec.msgpack.decode(data, type=tuple[int, dict[str, str]])
        self.holders = Holders(held)
        self.position = self.exact_from = position
        self.changes.clear()


JOURNAL = web.AppKey("holder_journal", HolderJournal)


def install(app: web.Application, live: LiveState) -> None:
    """Feed the holder journal from the API's log reader (before it starts), and close every
    open stream when the app shuts down (else cleanup waits for them)."""
    app[STREAMS] = set()
    journal = HolderJournal()
    app[JOURNAL] = journal
    live.add_fold(journal.apply, name="stream_holders", saved=journal)

    async def close_streams(app: web.Application) -> None:
        streams: set[asyncio.Event] = app[STREAMS]
        for closing in tuple(streams):
            closing.set()

    app.on_shutdown.append(close_streams)


def routes(deps: ApiDeps, tokens: TokenTable) -> web.RouteTableDef:
    r = web.RouteTableDef()
    links = attachments.links_for(deps)

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
        if after is not None and not 0 <= after <= MAX_SEQ:
            raise ApiError(400, f"Last-Event-ID / after goes from 0 to {MAX_SEQ}")
        if agent_id:
            await names_ready(deps, agent_id)  # the work frame names the customers (workspace.py)
        token_hash = hash_token(request.headers.get("Authorization", "").partition(" ")[2].strip())
        closing = asyncio.Event()
        request.app[STREAMS].add(closing)
        state = deps.live.state
        journal = request.app[JOURNAL]
        # From here to listen() nothing awaits: the view, the journal and the listener agree on
        # one position, ``now``. Events after it come from the listener; a resumed client's gap
        # (after, now] is read from the log once.
        listener = deps.live.listen()
        now = journal.position
        bound = log.bind(agent_id=agent_id)
        reset = False
        if after is None or after >= now:
            held: dict[str, str] | None = dict(journal.holders.holder)
        else:
            held = journal.holders_at(after)
            if held is None:
                reset = True
                bound.warning("api.stream_resume_not_exact", after=after, exact_from=journal.exact_from, now=now)
                count_skip("api.stream_resume")
                held = dict(journal.holders.holder)
        holders = Holders(held, {cid: c for cid, c in journal.holders.customer.items() if cid in held})
        work = work_json(state, agent_id, workspace.of(deps.live)) if agent_id else {"seq": now}
        work["seq"] = now
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        bound.info("api.stream_opened", after=after, now=now)
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        # ``seen``: the last event folded into ``holders``; ``sent``: nothing at or before it
        # goes out (the client has it). A client ahead of this API (another replica) waits.
        seen = now if reset or after is None or after >= now else after
        sent = now if reset or after is None else after

        async def send(batch: list[StoredEvent]) -> None:
            nonlocal seen, last_write
            for stored in batch:
                if stored.seq <= seen:
                    continue  # the gap and the live feed overlap
                seen = stored.seq
                if isinstance(stored.event, Undecodable):
                    continue  # quarantined by the log reader: no fact to tell
                concerned = holders.concerned(stored)
                if stored.seq > sent and (agent_id is None or agent_id in concerned):
                    body = event_json(stored)
                    with_attachment_links(stored, body, links, request[ACTOR])
                    await response.write(frame(stored.seq, _kind(stored), body))
                    last_write = loop.time()

        try:
            if reset:
                await response.write(frame(None, "reset", {"after": after, "reason": "too long ago to resume exactly"}))
            # A resumed stream's work frame has no id: its lists reflect ``now``, but frames
            # older than ``now`` follow it, and the client's position must not skip them.
            work_id = now if sent == now else None
            await response.write(frame(work_id, "work" if agent_id else "hello", work))
            if seen < now:
                # In batches: a client resuming from long ago must not load the log into memory.
                gap_reader = deps.live.store.replay(subjects.EVENTS_ALL, seen + 1)
                async with contextlib.aclosing(gap_reader) as batches:  # type: ignore[type-var]
                    async for gap in batches:
                        await send([stored for stored in gap if stored.seq <= now])
                        if gap and gap[-1].seq >= now:
                            break
            while not closing.is_set():
                if request.get(AGENT) is not None and tokens.agent_for_hash(token_hash) != agent_id:
                    await response.write(frame(None, "revoked", {"error": "token revoked"}))
                    break
                if agent_id and not getattr(deps.live.state.agents.get(agent_id), "active", True):
                    # Her tokens are refused from now on (auth.agent_refusal): so is this stream.
                    await response.write(frame(None, "revoked", {"error": f"agent {agent_id} is deactivated"}))
                    break
                if listener.overflowed:
                    # Too far behind to keep in memory: the client reconnects with Last-Event-ID.
                    await response.write(frame(None, "behind", {"resume_after": max(seen, sent)}))
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
