"""A fetch on a shared pull consumer that hands over messages as soon as there are any.

nats-py's ``fetch(batch, timeout)`` first sends a one-shot request (``no_wait`` with
``expires``: the server waits up to ``expires`` for a first message, then answers with what
is there). When that request ends without a message, "408 Requests Pending" because another
process's request already covers what is pending or "404", it sends a *lingering* request
and keeps the messages it gets until the whole batch has come or the timeout has passed.
Where several processes share a durable (intake, a connector's outbound consumer) that held
messages for up to the fetch timeout: three fetchers trickle-fed at 250 messages/s waited
0.9 s at p99, and three intake processes at 500 messages/s had a p99 of ~1 s.

``Puller`` sends one-shot requests only, over nats-py's public API (a plain subscription on
an inbox of the connection's prefix and a publish to the consumer's ``MSG.NEXT`` subject).
The messages are nats-py ``Msg`` objects: ``ack``, ``nak``, ``in_progress`` and
``metadata`` work as on a fetched one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext
from nats.js.errors import APIError

from events.skips import skipping

# How long a request may stay unanswered beyond its own ``expires`` before it is given up
# for lost (a reconnect drops it on the server's side).
LOST_AFTER_S = 1.0
# A request the server ended at once without a message ("408 Requests Pending": the others'
# requests cover every pending message) is not sent again before this pause.
EARLY_END_PAUSE_S = 0.01
# How long a stopping Puller waits for what the server already sent it (a round trip).
DRAIN_WAIT_S = 2.0
# Ends of a request: no messages, and request timeout or requests pending. A 409 (max waiting
# exceeded, the consumer deleted, a leadership change) ends it too, an error when it came alone.
_ENDS = frozenset({"404", "408"})


ASKED_AT = "_relaydesk_asked_at"


def asked_at(msg: Msg) -> float | None:
    """A time (``time.monotonic()``) the server handed ``msg`` over no earlier than: when the
    oldest request it may answer was sent. A process stopped or starved reads what the server
    sent meanwhile late; its ack wait ran from the handing over, not from the reading."""
    found = getattr(msg, ASKED_AT, None)
    return found if isinstance(found, float) else None


def held_since(msg: Msg, now: float) -> float:
    """Since when the process reading ``msg`` at ``now`` (``time.monotonic()``) may count itself
    its holder: the handing over (``asked_at``), ``now`` for a message not fetched by ``Puller``.
    Its ack wait runs from there, not from the reading."""
    found = asked_at(msg)
    return now if found is None else min(now, found)


@dataclass(slots=True)
class _Asked:
    subject: str
    at: float
    left: int


class _Request(msgspec.Struct):
    batch: int
    expires: int  # nanoseconds
    no_wait: bool


class Puller:
    """Fetches from the durable ``durable`` on ``stream``, which must exist.

    A fetch returns what it has as soon as it has a message: it does not wait for its
    request's end, which the server may send only at ``expires`` (a consumer at its
    ``max_ack_pending`` leaves a one-shot request open). A request still open serves the
    next fetch before another is sent (so a process holds at most one batch more than it
    fetched); each request has a reply subject of its own, so an end is never taken for
    another request's."""

    def __init__(self, nc: NATS, stream: str, durable: str) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._got: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None
        self._sent = 0
        self._open: str | None = None  # the reply subject of a request the server may still answer
        self._open_left = 0  # messages it may still bring
        self._open_until = 0.0  # loop time after which it is given up for lost
        # Requests the server may still answer, oldest first (it serves a consumer's waiting
        # requests in order): a message is taken for the oldest one's (``asked_at``).
        self._asked: deque[_Asked] = deque()

    async def start(self) -> Puller:
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._receive)
        return self

    async def _receive(self, msg: Msg) -> None:
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            oldest = self._asked[0] if self._asked else None
            setattr(msg, ASKED_AT, oldest.at if oldest is not None else time.monotonic())
            if oldest is not None:
                oldest.left -= 1
                if oldest.left <= 0:
                    self._asked.popleft()
        elif status != "100":  # the end of a request: it and those sent before it are over
            ended = next((i for i, asked in enumerate(self._asked) if asked.subject == msg.subject), -1)
            for _ in range(ended + 1):
                self._asked.popleft()
        self._got.append(msg)
        self._arrived.set()

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        """Up to ``batch`` messages as soon as there is one; ``[]`` when none came within
        ``wait`` seconds. Raises ``APIError`` for an answer that is neither a message nor the
        end of a request (503: JetStream is not available; a 409 alone: the consumer deleted)."""
        if self._sub is None:
            raise RuntimeError("Puller.fetch before start")
        loop = asyncio.get_running_loop()
        out: list[Msg] = []
        self._take(out, batch)
        if out:
            return out
        sent_at = loop.time()
        if self._open is None or self._open_left <= 0 or sent_at >= self._open_until:
            await self._send(batch, wait, sent_at)
        while True:
            remaining = self._open_until - loop.time()
            if self._open is None or remaining <= 0:
                if loop.time() - sent_at < wait / 2:  # ended at once: others cover what is pending
                    await asyncio.sleep(EARLY_END_PAUSE_S)
                return out
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return out
            self._take(out, batch)
            if out:
                await asyncio.sleep(0)  # the rest of the same answer, read in the same go
                self._take(out, batch)
                return out

    async def _send(self, batch: int, wait: float, now: float) -> None:
        self._sent += 1
        self._open = f"{self._inbox}.{self._sent}"
        self._open_left = batch
        self._open_until = now + wait + LOST_AFTER_S
        self._asked.append(_Asked(self._open, time.monotonic(), batch))
        request = msgspec.json.encode(_Request(batch=batch, expires=int(wait * 1e9), no_wait=True))
        await self.nc.publish(self.subject, request, reply=self._open)

    def _take(self, out: list[Msg], batch: int) -> None:
        while self._got and len(out) < batch:
            msg = self._got.popleft()
            status = JetStreamContext.is_status_msg(msg)
            if status is None:
                out.append(msg)
                self._open_left -= 1
            elif status == "100":  # a heartbeat (none is asked for) or flow control
                continue
            elif msg.subject != self._open:
                continue  # the end of a request given up for lost
            else:
                self._open = None
                if status not in _ENDS and not (status == "409" and out):
                    raise APIError.from_msg(msg)

    async def unsubscribe(self) -> None:
        """Stop; what an open request brought and no fetch took is handed back (``nak``) for
        another process to take now rather than after the ack wait."""
        if self._sub is None:
            return
        sub, self._sub = self._sub, None
        if self.nc.is_connected:
            # Unlike unsubscribe, drain waits until what the server sent before it saw us go
            # has reached _got; bounded, as it takes a round trip (nats-py leaves it untyped).
            with skipping("pull.drain", nats_subject=self.subject):
                await asyncio.wait_for(sub.drain(), DRAIN_WAIT_S)  # type: ignore[no-untyped-call]
        else:  # nothing can arrive: what was on its way is redelivered after the ack wait
            await sub.unsubscribe()
        left: list[Msg] = []
        self._open = None
        self._take(left, len(self._got))
        for msg in left:
            with skipping("pull.nak_on_stop", nats_subject=msg.subject):
                await msg.nak()
