"""Batched ordered replay: the log read in large batches, at the speed of an ordered consumer.

``EventStore.replay`` awaits ``next_msg`` once per message (a queue get and a timeout per
event). ``replay_batches`` lets the ordered consumer's callback only append each message to a
list and hands the list over whole: one wake-up per batch, decoding and opening (the personal
data cipher fetches the keys a batch needs together) done a batch at a time, and the next
batch arrives while the caller works on this one.

The server is the bottleneck of a replay on a busy machine, and a wildcard filter costs it
2-3 times an unfiltered read (measured on nats-server 2.15: ~10k against ~25k msg/s, 266-byte
sealed events over ~30k conversation subjects): ``rd.evt.c.>`` is therefore read as the whole
stream (``rd.evt.>``, which the server serves unfiltered) and agent events are dropped here,
before decoding. Agent events are a small share of a real log; ``whole_stream=False`` reads
through the filter instead.

Memory stays bounded: the callback waits once ``high_water`` messages are waiting to be
handed over; the ordered consumer's flow control then holds the server back.

Behaves like ``EventStore.replay``: events up to the end of the log as it stood when the
replay began, an undecodable payload handed on as ``Undecodable`` and quarantined under the
store's reader name, personal fields opened through the store's cipher.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events import subjects
from events.codec import Undecodable, decode_log_event
from events.raw_delivery import RawHandler, drop_raw_handler, parse_headers, raw_handlers
from events.store import EventStore, StoredEvent

log = structlog.get_logger(__name__)

DEFAULT_BATCH = 10_000
HEARTBEAT_S = 2.0  # the server's idle heartbeat; two missed: the consumer is recreated
INACTIVE_S = 60.0  # a consumer left behind (a killed reader) is removed by the server after this
ACK_PREFIX = "$JS.ACK."
ACK_PREFIX_BYTES = ACK_PREFIX.encode()


@contextlib.contextmanager
def bulk_gc(threshold: int = 100_000) -> Iterator[None]:
    """For a long read of the log (a rebuild): the cyclic garbage collector runs every
    ``threshold`` allocations instead of every 700, and no longer walks the objects alive
    when it began. A batch of events allocates ~10^5 containers that all live until the
    batch is written, so at the default the collector ran every few events and walked every
    one still held: with it, decoding took three times as long (measured on the bench log).
    Events hold no reference cycles, so nothing waits on it. Restored on leaving."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(threshold, 50, 1_000)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


class ReplayStalled(TimeoutError):
    """Nothing arrived for the store's timeout, even from a recreated consumer."""


class Arrived(NamedTuple):
    """One message as the reader keeps it until it is decoded."""

    seq: int  # stream sequence
    subject: str
    data: bytes
    headers: bytes | dict[str, str] | None  # raw (the fast path: parsed only if ever needed) or parsed


class _OrderedReader:
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


async def replay_batches(
    store: EventStore,
    filter_subject: str = subjects.EVENTS_ALL,
    from_seq: int = 1,
    *,
    batch: int = DEFAULT_BATCH,
    end: int | None = None,
    high_water: int | None = None,
    whole_stream: bool = True,
) -> AsyncIterator[list[StoredEvent]]:
    """Batches (at most ``batch`` events each, in log order) from ``from_seq`` up to ``end``
    (default: the end of the log now)."""
    async for arrived in replay_arrivals(
        store, filter_subject, from_seq, batch=batch, end=end, high_water=high_water, whole_stream=whole_stream
    ):
        chunk = await decode_arrivals(store, arrived)
        yield await store.opened_all(chunk)


async def replay_arrivals(
    store: EventStore,
    filter_subject: str = subjects.EVENTS_ALL,
    from_seq: int = 1,
    *,
    batch: int = DEFAULT_BATCH,
    end: int | None = None,
    high_water: int | None = None,
    whole_stream: bool = True,
) -> AsyncIterator[list[Arrived]]:
    """``replay_batches`` before decoding: the messages as they arrived (never an empty batch)."""
    read_filter, keep = filter_subject, None
    if whole_stream and filter_subject == subjects.CUSTOMER_EVENTS_ALL:
        read_filter, keep = subjects.EVENTS_ALL, filter_subject[:-1]  # "rd.evt.c."
    last = await store.last_seq() if end is None else end
    if last < from_seq:
        return
    batch = max(1, batch)
    reader = _OrderedReader(store, read_filter, max(1, from_seq), last, high_water or batch * 3)
    await reader.start()
    try:
        info = await store.js.consumer_info(subjects.EVENTS_STREAM, reader.consumer or "")
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if info.num_pending == 0 and not delivered:
            return  # nothing on the filter from there on (nothing pending, nothing sent to us)
        quiet = 0.0
        while True:
            if reader.broken:
                await reader.recreate("gap in the consumer sequence")
            if not reader.arrived and not reader.finished:
                reader.wake.clear()
                try:
                    async with asyncio.timeout(HEARTBEAT_S * 2):
                        await reader.wake.wait()
                    quiet = 0.0
                except TimeoutError:
                    quiet += HEARTBEAT_S * 2
                    if quiet >= max(store.timeout, HEARTBEAT_S * 4):
                        raise ReplayStalled(f"replay of {filter_subject} stalled at sequence {reader.sseq}") from None
                    if not reader.arrived:
                        await reader.recreate("silent for two heartbeats")
                continue
            if not reader.finished and len(reader.arrived) < batch:
                # Let the batch fill (or the end arrive) before handing it over.
                reader.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await reader.wake.wait()
            chunk, done = _select(await reader.take(batch), last, keep)
            if chunk:
                yield chunk
            if done or (reader.finished and not reader.arrived):
                return
    finally:
        await reader.close()


def _select(msgs: list[Arrived], last: int, keep: str | None) -> tuple[list[Arrived], bool]:
    """The messages on subjects starting with ``keep`` (if given) up to ``last``; True when
    the end was reached."""
    out: list[Arrived] = []
    for arrived in msgs:
        seq = arrived.seq
        if seq > last:
            return out, True
        if keep is None or arrived.subject.startswith(keep):
            out.append(arrived)
        if seq >= last:
            return out, True
    return out, False


async def decode_arrivals(store: EventStore, arrived: list[Arrived]) -> list[StoredEvent]:
    """The messages as stored events (not opened); a payload that does not decode is handed
    on as ``Undecodable`` and quarantined under the store's reader name."""
    out: list[StoredEvent] = []
    for seq, subject, data, headers in arrived:
        stored = StoredEvent(seq, subject, decode_log_event(data, subject=subject))
        if isinstance(stored.event, Undecodable):
            # quarantined, and still handed on (readers count its sequence)
            await store.quarantine.record(
                store.reader,
                seq,
                subject,
                f"cannot decode: {stored.event.error}",
                data=stored.event.raw,
                headers=parse_headers(headers),
            )
        out.append(stored)
    return out


async def replay_discard(
    store: EventStore, filter_subject: str = subjects.EVENTS_ALL, *, count_only: str = "", client: str = "raw"
) -> int:
    """The ceiling: the log read and every message dropped undecoded, by this module's reader
    (``client="raw"``) or by nats-py's ordered consumer (``"nats-py"``). Returns how many
    arrived on subjects starting with ``count_only``."""
    last = await store.last_seq()
    if last < 1:
        return 0
    if client == "nats-py":
        return await _nats_py_discard(store, filter_subject, count_only, last)
    reader = _OrderedReader(store, filter_subject, 1, last, DEFAULT_BATCH * 3)
    await reader.start()
    count = 0
    try:
        while True:
            if reader.broken:
                await reader.recreate("gap in the consumer sequence")
            if not reader.arrived and not reader.finished:
                reader.wake.clear()
                try:
                    async with asyncio.timeout(store.timeout):
                        await reader.wake.wait()
                except TimeoutError:
                    raise ReplayStalled(f"replay of {filter_subject} stalled at sequence {reader.sseq}") from None
            for arrived in await reader.take(DEFAULT_BATCH * 3):
                if arrived.subject.startswith(count_only):
                    count += 1
            if reader.finished and not reader.arrived:
                return count
    finally:
        await reader.close()


async def _nats_py_discard(store: EventStore, filter_subject: str, count_only: str, last: int) -> int:
    count = 0
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        if msg.subject.startswith(count_only):
            count += 1
        meta = msg.metadata
        if meta.sequence.stream >= last or meta.num_pending == 0:
            done.set()

    sub = await store.js.subscribe(
        filter_subject,
        stream=subjects.EVENTS_STREAM,
        ordered_consumer=True,
        cb=on_msg,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
        pending_msgs_limit=-1,
        pending_bytes_limit=-1,
    )
    try:
        await done.wait()
    finally:
        await sub.unsubscribe()
    return count
