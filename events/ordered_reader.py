"""An ordered push consumer on ``RD_EVENTS`` read on a plain core subscription: the reader
under ``events.replay`` (``OrderedReader``) and the messages as it keeps them (``Arrived``).

What nats-py's ``ordered_consumer`` does, without its per-message metadata parsing and queue
hops: flow control answered here, and withheld while ``high_water`` messages wait, so the
server holds back; a gap in the consumer sequence, or a silence of two heartbeats, and the
consumer is recreated at the next stream sequence. Messages come raw from the protocol parser
where nats-py allows (``events.raw_delivery``), else through a subscription callback.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import NamedTuple

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events import subjects
from events.raw_delivery import RawHandler, drop_raw_handler, parse_headers, raw_handlers
from events.store import EventStore

log = structlog.get_logger(__name__)

HEARTBEAT_S = 2.0  # the server's idle heartbeat; two missed: the consumer is recreated
INACTIVE_S = 60.0  # a consumer left behind (a killed reader) is removed by the server after this
ACK_PREFIX = "$JS.ACK."
ACK_PREFIX_BYTES = ACK_PREFIX.encode()


class Arrived(NamedTuple):
    """One message as the reader keeps it until it is decoded."""

    seq: int  # stream sequence
    subject: str
    data: bytes
    headers: bytes | dict[str, str] | None  # raw (the fast path: parsed only if ever needed) or parsed


class OrderedReader:
    """An ordered push consumer on a plain core subscription (what nats-py's
    ``ordered_consumer`` does, without its per-message metadata parsing and queue hops):
    flow control answered by us, and withheld while ``high_water`` messages wait, so the
    server holds back; a gap in the consumer sequence, or a silence of two heartbeats, and the
    consumer is recreated at the next stream sequence. Nothing is skipped, nothing repeated.
    Messages come raw from the protocol parser where nats-py allows (``events.raw_delivery``)."""

    def __init__(self, store: EventStore, read_filter: str, from_seq: int, last: int, high_water: int) -> None:
        self.store = store
        self.read_filter = read_filter
        self.last = last
        self.high_water = high_water
        self.sseq = from_seq - 1  # the last stream sequence taken in
        self.cseq = 0  # the last consumer sequence taken in (per consumer)
        self.consumer: str | None = None
        self.consumer_token = b""
        self.arrived: list[Arrived] = []
        self.finished = False
        self.broken = False  # a gap: recreate the consumer
        self.withheld: str | None = None  # a flow control reply not answered yet
        self.wake = asyncio.Event()
        self.sub: Subscription | None = None
        self.inbox = store.nc.new_inbox()
        self.raw: dict[int, RawHandler] | None = None
        self._answers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.sub = await self.store.nc.subscribe(
            self.inbox, cb=self.on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        self.raw = raw_handlers(self.store.nc)
        if self.raw is not None:
            self.raw[self.sub._id] = self.on_raw
        await self._create()

    async def _create(self) -> None:
        # Named before it exists: its first messages may arrive before the create answers.
        name = f"replay_{uuid.uuid4().hex[:16]}"
        config = ConsumerConfig(
            name=name,
            deliver_subject=self.inbox,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.sseq + 1,
            ack_policy=AckPolicy.NONE,
            flow_control=True,
            idle_heartbeat=HEARTBEAT_S,
            filter_subject=self.read_filter,
            mem_storage=True,
            inactive_threshold=INACTIVE_S,
        )
        self.cseq = 0
        self.broken = False
        self.consumer = name
        self.consumer_token = name.encode()
        await self.store.js.add_consumer(subjects.EVENTS_STREAM, config)

    async def recreate(self, why: str) -> None:
        log.info("replay.consumer_recreated", why=why, from_seq=self.sseq + 1, consumer=self.consumer)
        await self._delete()
        self.withheld = None
        await self._create()

    async def _delete(self) -> None:
        consumer, self.consumer = self.consumer, None
        self.consumer_token = b""
        if consumer is None:
            return
        try:
            await self.store.js.delete_consumer(subjects.EVENTS_STREAM, consumer)
        except (NatsError, TimeoutError) as err:  # gone already, or left to its inactivity threshold
            log.debug("replay.consumer_left", consumer=consumer, error=type(err).__name__)

    async def close(self) -> None:
        self.finished = True
        if self.sub is not None:
            if self.raw is not None:
                drop_raw_handler(self.store.nc, self.sub._id)
                self.raw = None
            await self.sub.unsubscribe()
            self.sub = None
        await self._delete()

    def on_raw(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        """A message straight from the protocol parser (see ``events.raw_delivery``)."""
        if self.finished or self.consumer is None:
            return
        if not reply.startswith(ACK_PREFIX_BYTES):
            fc = self._status(reply.decode(), parse_headers(headers) or {})
            if fc is not None:
                task = asyncio.get_running_loop().create_task(self.store.nc.publish(fc, b""))
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)
            return
        tokens = reply.split(b".")
        at = 3 if len(tokens) == 9 else 5  # v1: $JS.ACK.<stream>.<consumer>...; v2 adds domain, account
        if tokens[at] != self.consumer_token or self.broken:
            return  # from a consumer replaced since, or after a gap: the new one resends it
        self._take_in(int(tokens[at + 3]), int(tokens[at + 2]), int(tokens[at + 5]), subject.decode(), data, headers)

    async def on_msg(self, msg: Msg) -> None:
        """A message through nats-py's callback (no raw delivery on this connection)."""
        if self.finished or self.consumer is None:
            return
        reply = msg.reply
        if not reply.startswith(ACK_PREFIX):
            fc = self._status(reply, msg.headers or {})
            if fc is not None:
                await self.store.nc.publish(fc, b"")
            return
        tokens = reply.split(".")
        at = 3 if len(tokens) == 9 else 5
        if tokens[at] != self.consumer or self.broken:
            return
        self._take_in(int(tokens[at + 3]), int(tokens[at + 2]), int(tokens[at + 5]), msg.subject, msg.data, msg.headers)

    def _take_in(
        self, cseq: int, sseq: int, pending: int, subject: str, data: bytes, headers: bytes | dict[str, str] | None
    ) -> None:
        if cseq != self.cseq + 1:
            self.broken = True
            self.wake.set()
            return
        self.cseq, self.sseq = cseq, sseq
        self.arrived.append(Arrived(sseq, subject, data, headers))
        if sseq >= self.last or pending == 0:
            self.finished = True
            self.wake.set()
        elif len(self.arrived) >= self.high_water // 3:
            self.wake.set()

    def _status(self, reply: str, headers: dict[str, str]) -> str | None:
        """A status message (flow control request, heartbeat); the flow control reply to
        answer now, if any."""
        # A flow control request (its reply), or a heartbeat telling us the server waits for one.
        fc = reply or headers.get("Nats-Consumer-Stalled")
        answer = None
        if fc:
            if len(self.arrived) < self.high_water:
                answer = fc
            else:
                self.withheld = fc  # answered once the reader has taken messages off (``take``)
        last = headers.get("Nats-Last-Consumer")
        if last is not None and int(last) != self.cseq and not self.broken:
            self.broken = True  # the server sent more than we saw
            self.wake.set()
        return answer

    async def take(self, batch: int) -> list[Arrived]:
        taken = self.arrived[:batch]
        del self.arrived[:batch]
        if self.withheld is not None and len(self.arrived) < self.high_water:
            fc, self.withheld = self.withheld, None
            await self.store.nc.publish(fc, b"")
        return taken
