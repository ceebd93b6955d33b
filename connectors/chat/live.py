"""Live push across instances: the open sockets of this instance, grouped by address.

Each address with a socket here has one core NATS subscription to the live copies the history
stream republishes (``rd.chat.live.<hash>``), so a frame stored by any instance reaches the
address's sockets on every instance. A socket's catch-up is read after the subscription exists,
with live frames held back meanwhile; a gap (``Nats-Last-Sequence`` above what a socket has
seen, or a NATS reconnect) is read from the stream. If the stream does not answer, the socket is
closed with 1013 and the widget reconnects with ``after_seq``.

Replays a client asks for (a socket's catch-up from its ``after_seq``, a ``resume`` frame) are
at most ``REPLAYS_PER_MINUTE`` per address on this instance: each read is one request to the
stream per frame kept (up to ``history_frames``), so a visitor sending ``resume`` from 0 in a
loop, or opening sockets with ``after_seq=0`` in a loop, had NATS read their history again
each time: 300 resume frames of 40 bytes were 9,000 stream reads (found by a security audit).
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from events.skips import skipping
from events.stopping import cancel_and_wait

from . import tokens
from .cutoff import close_within, cut
from .history import HistoryUnavailable, LiveFrame
from .part import ChatPart, Shared
from .protocol import CLOSE_TOO_SLOW, CLOSE_TRY_LATER, error_frame
from .ratelimit import RateLimiter

log = structlog.get_logger("relaydesk.connector.chat")

SEND_QUEUE = 1000
# What may wait for one socket, in bytes of JSON (a replay of a full history of long messages
# fits: 200 frames of 4 KiB escaped \uXXXX are ~5 MiB); more and the socket is closed 4429.
SEND_QUEUE_BYTES = 8 * 1024 * 1024
# Sockets one address may hold on an instance (tabs, devices): each takes every frame of the
# address, so 1,000 sockets opened with one token made one reply 1,000 sends (an audit).
SOCKETS_PER_ADDRESS = 20
# Catch-ups a client asks for, per address and instance (a burst of as many): a widget asks one
# per socket it opens (a page load, a reconnect) and never sends ``resume``.
REPLAYS_PER_MINUTE = 30


class Limited(HistoryUnavailable):
    """A limit of the address on this instance: the socket is closed 1013 with the reason."""


class TooManyReplays(Limited):
    """The address asked for more catch-ups than ``REPLAYS_PER_MINUTE``: reconnect later."""


class TooManySockets(Limited):
    """The address holds ``SOCKETS_PER_ADDRESS`` sockets on this instance already."""


@dataclass(eq=False)
class Client:
    """One open socket of an address."""

    id: str
    address: str
    claims: tokens.SessionClaims
    ws: web.WebSocketResponse
    # Frames as JSON text, waiting for the socket's writer, and their bytes.
    outbox: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE))
    closing: asyncio.Task[None] | None = None
    transport: asyncio.BaseTransport | None = None  # to abort a connection that takes nothing
    queued: int = 0
    # The highest history sequence this socket has been given (or was shown as caught up to),
    # and whether it takes live frames yet (false while its catch-up is read).
    last: int = 0
    live: bool = False
    watch: Watch | None = None  # the address's live subscription on this instance, once joined

    def push(self, frame: dict[str, Any]) -> bool:
        """Queue ``frame`` for the socket; a client too slow to take its frames is closed
        (it reconnects with ``after_seq`` and misses nothing)."""
        if self.closing is not None:
            return False
        data = json.dumps(frame)
        if self.outbox.full() or self.queued + len(data) > SEND_QUEUE_BYTES:
            cut("too_slow", pending=self.outbox.qsize(), pending_bytes=self.queued)
            self.close_soon(CLOSE_TOO_SLOW, "too slow: reconnect with after_seq")
            return False
        self.outbox.put_nowait(data)
        self.queued += len(data)
        return True

    def taken(self, data: str) -> None:
        """``data`` left the outbox for the socket."""
        self.queued -= len(data)

    def close_soon(self, code: int, reason: str) -> None:
        """Close the socket (aborted if the client does not take the close frame in time)."""
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(
                close_within(self.ws, self.transport, code, reason.encode())
            )


@dataclass(eq=False)
class Watch:
    """The live frames of one address on this instance: one core NATS subscription shared by
    the address's sockets here. ``lock`` orders catch-up reads and live frames."""

    address: str
    clients: set[Client] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sub: Subscription | None = None


class LivePush(ChatPart):
    """The watches of this instance: ``join`` a socket to its address, ``leave`` when it closes."""

    nc: NATS  # from the connector's attach()

    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self.watches: dict[str, Watch] = {}
        self._resync: asyncio.Task[None] | None = None
        self.replays = RateLimiter(REPLAYS_PER_MINUTE)

    def start(self) -> None:
        if self.settings.resync_interval > 0:
            self._resync = asyncio.get_running_loop().create_task(self._resync_loop())

    async def close(self) -> None:
        await cancel_and_wait(self._resync)
        self._resync = None
        watches, self.watches = list(self.watches.values()), {}
        for watch in watches:
            await self._unsubscribe(watch)

    async def join(self, client: Client, after: int) -> None:
        """Give ``client`` its ``ready`` frame and every kept frame after ``after``, then live
        frames. The address's live subscription exists before the catch-up is read, and the
        watch lock holds live frames back meanwhile, so nothing falls in between."""
        watch = self.watches.get(client.address)
        if watch is None:
            watch = self.watches[client.address] = Watch(client.address)
        if len(watch.clients) >= SOCKETS_PER_ADDRESS:
            cut("too_many_sockets", sockets=len(watch.clients))
            raise TooManySockets(f"more than {SOCKETS_PER_ADDRESS} sockets of one visitor: close one")
        watch.clients.add(client)
        client.watch = watch
        try:
            async with watch.lock:
                if watch.sub is None:
                    try:
                        watch.sub = await self.nc.subscribe(
                            self.history.live_subject(client.address),
                            cb=functools.partial(self.on_live, watch),
                            pending_msgs_limit=SEND_QUEUE * 10,
                        )
                        # The server has the interest before the catch-up is read.
                        await self.nc.flush(timeout=max(1, round(self.settings.ack_timeout)))
                    except (TimeoutError, NatsError, OSError) as err:
                        raise HistoryUnavailable(f"live subscription: {type(err).__name__}") from err
                last = await self.history.last_seq(client.address)
                client.push(
                    {
                        "type": "ready",
                        "epoch": self.history.epoch,
                        "last_seq": last,
                        "max_message_bytes": self.settings.max_message_bytes,
                    }
                )
                if after < last:
                    if wait := self.replays.take(client.address):
                        raise TooManyReplays(
                            f"more than {REPLAYS_PER_MINUTE} catch-ups a minute: reconnect in {max(1, round(wait))} s"
                        )
                    for frame in await self.history.read(client.address, after, upto=last):
                        client.push(frame.to_json())
                client.last = last
                client.live = True
        except BaseException:
            await self.leave(client)
            raise

    async def leave(self, client: Client) -> None:
        watch, client.watch = client.watch, None
        if watch is None:
            return
        watch.clients.discard(client)
        if not watch.clients:
            if self.watches.get(client.address) is watch:
                del self.watches[client.address]
            await self._unsubscribe(watch)

    async def _unsubscribe(self, watch: Watch) -> None:
        sub, watch.sub = watch.sub, None
        if sub is not None:
            with skipping("chat.live_unsubscribe", nats_subject=sub.subject):  # a closed or broken connection
                await sub.unsubscribe()

    async def on_live(self, watch: Watch, msg: Msg) -> None:
        try:
            live = LiveFrame.from_msg(msg)
        except (KeyError, ValueError, TypeError) as err:
            self.log.warning("chat.live_frame_unreadable", error=type(err).__name__)
            return
        async with watch.lock:
            for client in list(watch.clients):
                if not client.live or live.frame.seq <= client.last:
                    continue
                if live.previous > client.last and not await self._catch_up(client, upto=live.frame.seq - 1):
                    continue
                if client.id != live.origin:  # the sender's socket gets the ack instead
                    client.push(live.frame.to_json())
                client.last = live.frame.seq

    async def _catch_up(self, client: Client, upto: int | None = None) -> bool:
        """Push what ``client`` missed (a live copy lost while NATS reconnected, a slow
        subscription); if the stream does not answer, close it: it reconnects with after_seq."""
        try:
            frames = await self.history.read(client.address, client.last, upto=upto)
        except HistoryUnavailable as err:
            self.log.warning("socket.catch_up_failed", reason=str(err))
            client.close_soon(CLOSE_TRY_LATER, "history unavailable: reconnect with after_seq")
            return False
        for frame in frames:
            if frame.seq > client.last:
                client.push(frame.to_json())
                client.last = frame.seq
        return True

    async def resume(self, client: Client, after: int) -> None:
        """The client asked for every kept frame after ``after`` again."""
        watch = client.watch
        if watch is None:
            return
        if wait := self.replays.take(client.address):
            client.push(
                error_frame(
                    "rate_limited",
                    f"more than {REPLAYS_PER_MINUTE} catch-ups a minute",
                    retryable=True,
                    retry_after=round(max(wait, 1.0), 1),
                )
            )
            return
        async with watch.lock:
            try:
                frames = await self.history.read(client.address, after)
            except HistoryUnavailable as err:
                self.log.warning("socket.resume_failed", reason=str(err))
                client.push(
                    error_frame("unavailable", "history unavailable; resume again", retryable=True, retry_after=1.0)
                )
                return
            for frame in frames:
                client.push(frame.to_json())
                client.last = max(client.last, frame.seq)

    async def _resync_loop(self) -> None:
        """After NATS reconnects, live copies sent meanwhile are lost: read them from the stream."""
        seen = self.nc.stats.get("reconnects", 0)
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            now = self.nc.stats.get("reconnects", 0)
            if now == seen or not self.nc.is_connected:
                continue
            seen = now
            self.log.info("chat.resync", addresses=len(self.watches))
            for watch in list(self.watches.values()):
                try:
                    async with watch.lock:
                        for client in list(watch.clients):
                            if client.live:
                                await self._catch_up(client)
                except Exception:
                    self.log.exception("chat.resync_failed")
