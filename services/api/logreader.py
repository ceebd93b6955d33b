"""A reader of the log that never skips: pull fetches (flow control: the server sends no more
than one batch the reader asked for) and a check of every message's consumer sequence.

A core or push subscription that falls behind drops messages in the client ("slow consumer,
messages dropped") and the reader goes on as if nothing happened: the API's view then differs
from the log for good. Here every message must carry the next consumer sequence; one that
does not means something was lost on the way (dropped by the client, a reconnect, a consumer
the server forgot), so the reader throws the consumer away and reads again, with a fresh one,
from the stream sequence after the last one it handed on. Nothing is skipped and nothing is
handed on twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError
from prometheus_client import Counter

from events import subjects
from events.codec import Undecodable
from events.store import EventStore, StoredEvent, to_stored

log = structlog.get_logger(__name__)

REREADS = Counter(
    "relaydesk_log_reader_rereads_total",
    "Times a log reader found a gap in consumer sequences (a lost message) and read again from the last it applied",
    ["reader"],
)


class LogReader:
    """Batches of events after a stream sequence, in order, forever (or ``until``)."""

    def __init__(
        self,
        store: EventStore,
        filter_subject: str = subjects.EVENTS_ALL,
        *,
        batch: int = 500,
        wait: float = 1.0,
        pending_msgs_limit: int = 65_536,
    ) -> None:
        self.store = store
        self.filter_subject = filter_subject
        self.batch = batch
        self.wait = wait
        self.pending_msgs_limit = pending_msgs_limit
        self.rereads = 0  # gaps found (each one read again)
        self.read = 0  # messages handed on
        self._sub: JetStreamContext.PullSubscription | None = None
        self._consumer: str | None = None
        self._dseq = 0  # last consumer sequence seen on the current consumer

    async def batches(self, after: int, until: int | None = None) -> AsyncGenerator[list[StoredEvent], None]:
        """Events with stream sequence > ``after`` (up to ``until`` included, when given),
        in batches; an empty batch when ``wait`` seconds passed with nothing new (so a
        caller can look up and decide, say, that it has caught up)."""
        last = after
        try:
            while until is None or last < until:
                msgs = await self._fetch(last)
                out: list[StoredEvent] = []
                for msg in msgs:
                    meta = msg.metadata
                    if meta.sequence.consumer != self._dseq + 1 or meta.sequence.stream <= last:
                        await self._gap(last, expected=self._dseq + 1, got=meta.sequence.consumer)
                        break
                    self._dseq = meta.sequence.consumer
                    stored = to_stored(msg)
                    if until is not None and stored.seq > until:
                        break
                    if isinstance(stored.event, Undecodable):
                        await self.store._screen(stored, msg.headers)  # quarantined, and still handed on
                    out.append(stored)
                    last = stored.seq
                if out:
                    self.read += len(out)
                    yield await self.store.opened_all(out)
                elif not msgs:
                    await self._check_idle(last)
                    yield []
        finally:
            await self._close()

    async def _fetch(self, last: int) -> list[Msg]:
        if self._sub is None:
            await self._open(last + 1)
        assert self._sub is not None
        try:
            return list(await self._sub.fetch(self.batch, timeout=self.wait))
        except (TimeoutError, NatsTimeoutError):
            return []
        except (NotFoundError, APIError, NatsError) as err:
            # The consumer is gone (a server restart, its inactivity threshold) or the
            # connection broke: read again from where we are.
            log.warning("log_reader.refetch", reader=self.store.reader, after=last, error=repr(err))
            await self._close()
            await asyncio.sleep(min(self.wait, 0.5))
            return []

    async def _check_idle(self, last: int) -> None:
        """Nothing came: were messages delivered that never reached us (lost at the end of a
        batch, with nothing after them to show the gap)?"""
        if self._sub is None:
            return
        try:
            info = await self._sub.consumer_info()
        except (TimeoutError, NotFoundError, APIError, NatsError) as err:
            log.warning("log_reader.refetch", reader=self.store.reader, after=last, error=repr(err))
            await self._close()
            return
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if delivered is not None and delivered > self._dseq:
            await self._gap(last, expected=self._dseq + 1, got=delivered)

    async def _gap(self, last: int, expected: int, got: int) -> None:
        self.rereads += 1
        REREADS.labels(reader=self.store.reader).inc()
        log.warning(
            "log_reader.gap",
            reader=self.store.reader,
            after_seq=last,
            expected_consumer_seq=expected,
            got_consumer_seq=got,
            action="read again from the last sequence applied",
        )
        await self._close()

    async def _open(self, from_seq: int) -> None:
        self._dseq = 0
        self._sub = await self.store.js.pull_subscribe(
            self.filter_subject,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=max(1, from_seq),
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,  # gone by itself if this process dies
                mem_storage=True,
                num_replicas=1,
            ),
            pending_msgs_limit=self.pending_msgs_limit,
        )
        self._consumer = self._sub._consumer

    async def _close(self) -> None:
        sub, consumer = self._sub, self._consumer
        self._sub = self._consumer = None
        if sub is not None:
            with contextlib.suppress(NatsError, asyncio.TimeoutError):  # closing a broken subscription: nothing to keep
                await sub.unsubscribe()
        if consumer:
            try:
                await self.store.js.delete_consumer(subjects.EVENTS_STREAM, consumer)
            except (TimeoutError, NotFoundError, NatsError) as err:
                # Left to its inactivity threshold.
                log.debug("log_reader.consumer_left", reader=self.store.reader, consumer=consumer, error=repr(err))
