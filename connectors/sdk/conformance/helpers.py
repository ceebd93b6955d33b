"""Test helpers for connector authors: read what a connector published, run a fake provider API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events import subjects
from events.codec import decode_inbound
from events.model import DeliveryFailed, InboundMessage, InboundRecord, MessageSent, ReplyOutcomeReported
from events.streams import ensure_streams
from services.bus.connection import let_go
from services.bus.embedded import EmbeddedNats

from ..publish import MSG_ID


async def serve_locally(app: web.Application, host: str = "127.0.0.1") -> tuple[web.AppRunner, str]:
    """Serve a fake API on ``host`` (any free port): its runner (``cleanup`` stops it) and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    bound_host, port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{port}"


@contextlib.asynccontextmanager
async def conformance_nats(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, NATS]]:
    """A nats-server of the kit's own with Relaydesk's streams, and a connection that rides out
    the restarts a kit's test makes."""
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.astart()
    try:
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)
        try:
            await ensure_streams(nc.jetstream())
            yield server, nc
        finally:
            # Closing a connection whose server a test stopped may fail (a transport error, or
            # nats-py's own CancelledError): nothing is left to undo on a server about to go.
            await let_go(nc, drain=False)
    finally:
        await server.astop()


@dataclass(frozen=True)
class Published:
    seq: int
    msg_id: str
    message: InboundMessage


@dataclass(frozen=True)
class ReportedOutcome:
    """A reply's outcome as the connector reported it on ``rd.inbound.<channel>``;
    ``recorded`` is what intake appends to the log for it."""

    seq: int
    msg_id: str
    report: ReplyOutcomeReported

    @property
    def recorded(self) -> MessageSent | DeliveryFailed:
        return self.report.recorded()


async def _read_records(js: JetStreamContext, channel: str, idle: float) -> list[tuple[int, str, InboundRecord]]:
    subject = subjects.inbound(channel)
    try:
        info = await js.stream_info(subjects.INBOUND_STREAM, subjects_filter=subject)
    except Exception:
        return []
    count = (info.state.subjects or {}).get(subject, 0)
    if not count:
        return []
    sub = await js.subscribe(
        subject,
        stream=subjects.INBOUND_STREAM,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
    )
    out: list[tuple[int, str, InboundRecord]] = []
    try:
        while len(out) < count:
            try:
                msg = await sub.next_msg(timeout=max(idle, 2.0))
            except TimeoutError:
                break
            msg_id = (msg.headers or {}).get(MSG_ID, "")
            out.append((int(msg.metadata.sequence.stream), msg_id, decode_inbound(msg.data)))
    finally:
        await sub.unsubscribe()
    return out


async def read_inbound(js: JetStreamContext, channel: str, *, idle: float = 0.3) -> list[Published]:
    """Every message on ``rd.inbound.<channel>`` so far, oldest first (reply outcomes left out)."""
    return [
        Published(seq=seq, msg_id=msg_id, message=record)
        for seq, msg_id, record in await _read_records(js, channel, idle)
        if isinstance(record, InboundMessage)
    ]


async def read_outcomes(
    js: JetStreamContext, channel: str, reply_id: str | None = None, *, idle: float = 0.3
) -> list[ReportedOutcome]:
    """Every reply outcome reported on ``rd.inbound.<channel>`` so far (of ``reply_id`` only,
    if given), oldest first."""
    return [
        ReportedOutcome(seq=seq, msg_id=msg_id, report=record)
        for seq, msg_id, record in await _read_records(js, channel, idle)
        if isinstance(record, ReplyOutcomeReported) and (reply_id is None or record.reply_id == reply_id)
    ]


async def wait_for_outcome(
    js: JetStreamContext, channel: str, reply_id: str, *, timeout: float = 15.0
) -> ReportedOutcome:
    """The first outcome reported for ``reply_id`` on ``rd.inbound.<channel>``, once there
    (``TimeoutError`` after ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while True:
            found = await read_outcomes(js, channel, reply_id)
            if found:
                return found[0]
            await asyncio.sleep(0.05)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() when the fake received it


FakeHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def throttled(seconds: float) -> web.Response:
    """A provider's "too many requests, come back in ``seconds``": 429 with ``Retry-After`` (and
    the wait in the body too, where Telegram and others put it)."""
    wait = f"{seconds:g}"
    body = {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {wait}"}
    return web.json_response(
        {**body, "parameters": {"retry_after": seconds}}, status=429, headers={"Retry-After": wait}
    )


@dataclass
class FakeProvider:
    """A local stand-in for a provider's outbound API. Every request is recorded in
    ``requests``; ``handler`` answers it (after ``fail_next`` forced 503s, for retry tests)."""

    handler: FakeHandler
    host: str = "127.0.0.1"
    requests: list[RecordedRequest] = field(default_factory=list)
    # Which requests are sends (the kit sets the suite's ``is_send``): only those are counted by
    # the kit and failed by ``fail_next``; others (an OAuth token fetch, say) just answered.
    is_send: Callable[[RecordedRequest], bool] = lambda _request: True
    fail_next: int = 0
    # Sends answered "come back in ``throttle_seconds``" (``throttle``: 429 with Retry-After) first.
    throttle_next: int = 0
    throttle_seconds: float = 1.0
    throttle: FakeHandler | None = None
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            at=time.monotonic(),
        )
        self.requests.append(recorded)
        if self.throttle_next > 0 and self.is_send(recorded):
            self.throttle_next -= 1
            if self.throttle is not None:
                return await self.throttle(request)
            return throttled(self.throttle_seconds)
        if self.fail_next > 0 and self.is_send(recorded):
            self.fail_next -= 1
            return web.json_response({"message": "temporarily unavailable (fake)"}, status=503)
        return await self.handler(request)

    @property
    def sends(self) -> list[RecordedRequest]:
        """The requests that were sends (``is_send``), in order."""
        return [r for r in self.requests if self.is_send(r)]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.url = await serve_locally(app, self.host)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, n: int = 1, timeout: float = 10.0) -> list[RecordedRequest]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(self.requests) < n:
                    await asyncio.sleep(0.02)
        return list(self.requests)
