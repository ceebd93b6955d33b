"""The JetStream event store: append with an expected subject sequence, read, replay, follow.

Reads never raise on a payload: one that does not decode comes back in its place as an
``events.codec.Undecodable`` (folds skip it and count its sequence) and is quarantined under
the store's ``reader`` name (``events.quarantine``: logged once, counted, parked).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from events import subjects
from events.acked import publish_acked
from events.codec import Undecodable, decode_log_event, encode
from events.counters import count_append
from events.direct import DirectBatches
from events.errors import describe_error
from events.model import LogEvent
from events.personal import PersonalDataCipher
from events.quarantine import Quarantine
from events.stored import StoredEvent as StoredEvent
from events.stored import to_stored as to_stored
from events.stored import trace_context
from events.tail import Tail as Tail

EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
MSG_ID = "Nats-Msg-Id"

log = structlog.get_logger(__name__)
WRONG_LAST_SEQUENCE = 10071


class ConcurrencyError(Exception):
    """Someone else appended to the subject since the state the caller decided on."""

    def __init__(self, subject: str, expected: int | None) -> None:
        super().__init__(f"{subject}: expected last sequence {expected}, the log has moved on")
        self.subject = subject
        self.expected = expected


@dataclass(frozen=True)
class Append:
    """One event to append; ``expected`` is the subject's last sequence the caller saw
    (0: the subject must be empty; None: no check). ``expected_subject`` checks ``expected``
    against another subject, wildcards allowed (``rd.evt.c.<customer>.>`` guards a whole
    customer). ``msg_id`` makes retries idempotent. ``trace``: W3C trace context headers
    (``traceparent``, ``tracestate``) written beside the event; None (tracing off): none."""

    event: LogEvent
    expected: int | None = None
    subject: str | None = None
    expected_subject: str | None = None
    msg_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    trace: Mapping[str, str] | None = None

    def target(self) -> str:
        return self.subject or subjects.for_event(self.event)

    def headers(self) -> dict[str, str]:
        h = {MSG_ID: self.msg_id}
        if self.expected is not None:
            h[EXPECTED_LAST_SUBJECT_SEQ] = str(self.expected)
            if self.expected_subject:
                h[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = self.expected_subject
        if self.trace:
            h.update(self.trace)
        return h


class EventStore:
    """``reader`` names who reads through this store (router, projector, api, …): the name a
    message it cannot decode is quarantined under (``events.quarantine``). One store serves
    several readers in one process through ``for_reader``."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        *,
        timeout: float = 5.0,
        reader: str = "relaydesk",
        quarantine: Quarantine | None = None,
        cipher: PersonalDataCipher | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.timeout = timeout
        # Seals personal fields on append, opens them on every read (events.personal);
        # None: written and read as they are (the router reads routing data only).
        self.cipher = cipher
        self.reader = reader
        self.quarantine = quarantine or Quarantine(js)
        # Batched direct gets (``read_direct``): one inbox subscription per connection,
        # shared by this store's reader views.
        self._direct = DirectBatches(nc, timeout)

    def for_reader(self, reader: str) -> EventStore:
        """This store (same connection, same quarantine), reading as ``reader``."""
        view = copy.copy(self)
        view.reader = reader
        return view

    # -- writing --------------------------------------------------------------------

    async def append(self, item: Append) -> int:
        """Append one event and return its stream sequence, or raise ConcurrencyError."""
        event = item.event if self.cipher is None else await self.cipher.seal(item.event)
        return await self._publish(item, event)

    async def _publish(self, item: Append, event: LogEvent) -> int:
        """Append ``item`` as ``event`` (its personal fields already sealed)."""
        subject = item.target()
        try:
            ack = await publish_acked(self.nc, subject, encode(event), timeout=self.timeout, headers=item.headers())
        except APIError as err:
            seq = await self._resolve_conflict(item, subject, err)
        else:
            seq = ack.seq
        count_append(item.event)  # relaydesk_events_appended_total{type}
        return seq

    async def append_many(self, items: Sequence[Append], *, in_flight: int = 256) -> list[int | ConcurrencyError]:
        """Pipeline many appends, each guarded by its own expected sequence.

        Requests go out concurrently on one connection. nats-py's ``publish_async`` is not
        used: it loses the error of a rejected publish (its reply handler raises instead of
        failing the future), and a rejection is exactly what the guard needs to report.
        """
        gate = asyncio.Semaphore(in_flight)
        failures: list[BaseException] = []
        # Sealed first, all of them: the keys of new customers are then created together,
        # not each in line before its customer's first append.
        sealed = None if self.cipher is None else await self.cipher.seal_many([item.event for item in items])

        async def one(at: int, item: Append) -> int | ConcurrencyError | None:
            async with gate:
                try:
                    if sealed is None:
                        return await self.append(item)
                    event = sealed[at]
                    if isinstance(event, Exception):
                        raise event
                    return await self._publish(item, event)
                except ConcurrencyError as conflict:
                    return conflict
                except Exception as err:
                    # Recorded, not raised: every append runs to its end first, so none is
                    # left running unobserved and the caller knows nothing is in flight.
                    failures.append(err)
                    return None

        results = await asyncio.gather(*(one(at, item) for at, item in enumerate(items)))
        if failures:
            raise failures[0]
        return [result for result in results if result is not None]  # all of them, here

    async def _resolve_conflict(self, item: Append, subject: str, err: APIError) -> int:
        if err.err_code != WRONG_LAST_SEQUENCE:
            raise err
        # A retry of an append that was in fact stored fails with 10071, not a duplicate
        # ack: if the subject's last message carries our msg id, it is ours.
        last = await self._last_msg(subject)
        if last is not None and last[1] == item.msg_id:
            return last[0]
        raise ConcurrencyError(subject, item.expected) from err

    async def _last_msg(self, subject: str) -> tuple[int, str | None] | None:
        try:
            raw = await self.js.get_last_msg(subjects.EVENTS_STREAM, subject, direct=True)
        except NotFoundError:
            return None
        headers = raw.headers or {}
        return int(raw.seq or 0), headers.get(MSG_ID)

    async def last_subject_seq(self, subject: str) -> int:
        last = await self._last_msg(subject)
        return last[0] if last else 0

    async def last_seq(self) -> int:
        info = await self.js.stream_info(subjects.EVENTS_STREAM)
        return int(info.state.last_seq)

    # -- quarantine -----------------------------------------------------------------

    def cannot_apply(self, stored: StoredEvent, err: BaseException) -> None:
        """A decoded event this reader's fold raised on: quarantine it (logged once, counted,
        parked with its payload as stored) so the caller can skip it and go on."""
        self.quarantine.record_soon(self.reader, stored.seq, stored.subject, f"cannot apply: {describe_error(err)}")

    async def decoded(self, seq: int, subject: str, data: bytes, headers: dict[str, str] | None = None) -> StoredEvent:
        """A payload read some other way (a direct get), decoded as every read decodes it."""
        event = decode_log_event(data, subject=subject)
        stored = StoredEvent(seq=seq, subject=subject, event=event, trace=trace_context(headers))
        await self._screen(stored, headers)
        return await self.opened(stored)

    async def opened(self, stored: StoredEvent) -> StoredEvent:
        """``stored`` with its personal fields opened (``events.personal``); as it is
        without a cipher."""
        if self.cipher is None:
            return stored
        event = await self.cipher.open(stored.event)
        return stored if event is stored.event else StoredEvent(stored.seq, stored.subject, event, stored.trace)

    async def opened_all(self, chunk: list[StoredEvent]) -> list[StoredEvent]:
        """``opened`` for a batch: the keys it needs are fetched together, not one by one."""
        if self.cipher is None:
            return chunk
        events = await self.cipher.open_many([stored.event for stored in chunk])
        return [
            stored if event is stored.event else StoredEvent(stored.seq, stored.subject, event, stored.trace)
            for stored, event in zip(chunk, events, strict=True)
        ]

    async def _screen(self, stored: StoredEvent, headers: dict[str, str] | None) -> None:
        if isinstance(stored.event, Undecodable):
            await self.quarantine.record(
                self.reader,
                stored.seq,
                stored.subject,
                f"cannot decode: {stored.event.error}",
                data=stored.event.raw,
                headers=headers,
            )

    # -- reading --------------------------------------------------------------------

    async def read(self, filter_subject: str = subjects.EVENTS_ALL, from_seq: int = 1) -> list[StoredEvent]:
        """Every event on ``filter_subject`` from ``from_seq`` up to now."""
        out: list[StoredEvent] = []
        async for batch in self.replay(filter_subject, from_seq):
            out.extend(batch)
        return out

    async def read_customer(self, customer_id: str) -> list[StoredEvent]:
        return await self.read(subjects.customer_filter(customer_id))

    async def read_customer_direct(self, customer_id: str, *, after: int = 0) -> list[StoredEvent]:
        """``read_customer`` without creating a consumer (see ``read_direct``); ``after``: only
        the events after that stream sequence."""
        return await self.read_direct(subjects.customer_filter(customer_id), after + 1)

    async def read_direct(self, filter_subject: str, from_seq: int = 1, batch: int = 500) -> list[StoredEvent]:
        """Every event on ``filter_subject`` from ``from_seq``, read with batched direct gets
        (nats-server 2.11+: one request answers up to ``batch`` messages and an end-of-batch
        status): one round trip for a short history, no consumer created, no stream info.
        On an older server (no batch answer) it falls back to ``read``."""
        raws: list[tuple[int, str, bytes, dict[str, str]]] = []
        seq = max(1, from_seq)
        while True:
            answer = await self._direct.get(subjects.EVENTS_STREAM, filter_subject, seq, batch)
            if answer is None:
                return await self.read(filter_subject, from_seq)
            got, more = answer
            raws.extend(got)
            if not more or not got:
                break
            seq = got[-1][0] + 1
        out: list[StoredEvent] = []
        for seq, subject, data, headers in raws:
            event = decode_log_event(data, subject=subject)
            stored = StoredEvent(seq=seq, subject=subject, event=event, trace=trace_context(headers))
            if isinstance(stored.event, Undecodable):
                await self._screen(stored, headers)  # quarantined, and still handed on
            out.append(stored)
        return await self.opened_all(out)

    async def replay(
        self, filter_subject: str = subjects.EVENTS_ALL, from_seq: int = 1, batch: int = 1000
    ) -> AsyncIterator[list[StoredEvent]]:
        """Batches of events up to the end of the log as it stood when the replay began."""
        end = await self.last_seq()
        if end < from_seq:
            return
        sub = await self._ordered(filter_subject, from_seq)
        consumer: str | None = None
        try:
            info = await sub.consumer_info()
            consumer = info.name
            # Nothing matches the filter: nothing left and nothing delivered to us. (The
            # delivered *stream* sequence is no guide: a filtered consumer moves it past
            # messages that do not match.)
            delivered = info.delivered.consumer_seq if info.delivered else 0
            if info.num_pending == 0 and not delivered:
                return
            chunk: list[StoredEvent] = []
            while True:
                msg = await sub.next_msg(timeout=self.timeout)
                stored = to_stored(msg)
                if stored.seq > end:
                    break
                if isinstance(stored.event, Undecodable):
                    await self._screen(stored, msg.headers)  # quarantined, and still handed on
                chunk.append(stored)
                if len(chunk) >= batch:
                    yield await self.opened_all(chunk)
                    chunk = []
                if stored.seq >= end or msg.metadata.num_pending == 0:
                    break
            if chunk:
                yield await self.opened_all(chunk)
        finally:
            if self.nc.is_closed or self.nc.is_draining:
                # Closed under the replay (a process stopping; a cancel is often on its way): the
                # subscription went with the connection, the server drops the ephemeral consumer
                # by itself, and a clean-up tried now would only raise ConnectionClosedError in
                # place of what ended the replay (the cancel: asyncio.run's "unhandled exception").
                log.debug("replay.stopped", reader=self.reader, reason="connection closed")
            else:
                await sub.unsubscribe()
                if consumer:
                    # An unsubscribed consumer lingers on the server until its inactivity
                    # threshold; the server caps how many may exist, and busy readers (intake
                    # reads a customer per message) would reach the cap. Delete it now.
                    with contextlib.suppress(NotFoundError, asyncio.TimeoutError):
                        await self.js.delete_consumer(subjects.EVENTS_STREAM, consumer)

    async def follow(self, filter_subject: str = subjects.EVENTS_ALL, from_seq: int = 1) -> AsyncIterator[StoredEvent]:
        """Every event from ``from_seq`` on, forever."""
        tail = await self.tail(filter_subject, from_seq)
        try:
            while True:
                stored = await tail.next(timeout=None)
                if stored is not None:
                    yield stored
        finally:
            await tail.close()

    async def tail(self, filter_subject: str = subjects.EVENTS_ALL, from_seq: int = 1) -> Tail:
        """A live view of the log from ``from_seq``: an ordered consumer (recreated by the
        client at the next sequence after a reconnect) feeding a local queue, so callers
        can both wait for the next event and drain what has arrived without waiting."""
        tail = Tail(
            on_undecodable=self._screen_soon,
            opener=self.opened if self.cipher is not None else None,
            reconnects=self._reconnects,
        )

        async def subscribe(start: int) -> JetStreamContext.PushSubscription:
            return await self.js.subscribe(
                filter_subject,
                stream=subjects.EVENTS_STREAM,
                ordered_consumer=True,
                cb=tail.on_msg,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=start,
                    ack_policy=AckPolicy.NONE,
                ),
                # Unbounded here: the tail bounds what waits by pausing (``events.tail``).
                pending_msgs_limit=-1,
                pending_bytes_limit=-1,
            )

        await tail.start(subscribe, from_seq)
        return tail

    def _reconnects(self) -> int:
        stats = getattr(self.nc, "stats", None)
        return int(stats.get("reconnects", 0)) if isinstance(stats, dict) else 0

    def _screen_soon(self, stored: StoredEvent) -> None:
        if isinstance(stored.event, Undecodable):
            self.quarantine.record_soon(
                self.reader, stored.seq, stored.subject, f"cannot decode: {stored.event.error}", data=stored.event.raw
            )

    async def _ordered(self, filter_subject: str, from_seq: int) -> JetStreamContext.PushSubscription:
        return await self.js.subscribe(
            filter_subject,
            stream=subjects.EVENTS_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=max(1, from_seq),
                ack_policy=AckPolicy.NONE,
            ),
            pending_msgs_limit=100_000,
        )


def reading_as(store: EventStore, reader: str) -> EventStore:
    """``store.for_reader(reader)``; a stand-in (a test's fake store) is used as it is."""
    return store.for_reader(reader) if isinstance(store, EventStore) else store
