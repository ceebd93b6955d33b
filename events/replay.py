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
handed over; the ordered consumer's flow control then holds the server back. That consumer,
on a plain core subscription, is ``events.ordered_reader``; here: the batches read through it,
their decoding, ``bulk_gc`` for a long read, and ``replay_discard`` (the bench's ceiling).

Behaves like ``EventStore.replay``: events up to the end of the log as it stood when the
replay began, an undecodable payload handed on as ``Undecodable`` and quarantined under the
store's reader name, personal fields opened through the store's cipher.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events import subjects
from events.codec import Undecodable, decode_log_event
from events.ordered_reader import HEARTBEAT_S, OrderedReader
from events.ordered_reader import Arrived as Arrived  # re-exported: services.timelines.bulk_parent takes it from here
from events.raw_delivery import parse_headers
from events.store import EventStore, StoredEvent

DEFAULT_BATCH = 10_000


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
    reader = OrderedReader(store, read_filter, max(1, from_seq), last, high_water or batch * 3)
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
    reader = OrderedReader(store, filter_subject, 1, last, DEFAULT_BATCH * 3)
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
