"""Bounded redelivery and dead letters for the work-queue consumers (intake, connector outbound).

A work message that fails is handed back with a growing delay (``nak(delay)``), at most
``max_deliver`` times in all; the last failure terminates it (``term``) and parks it in the
``rd_parked`` bucket as a ``dead_letter`` (``events.parking``), with the error, the raw data
and the headers, so an operator can look at it and re-drive it (``relaydesk dlq retry``). A
message that cannot be decoded is dead-lettered at once: it never will decode.

The durable consumer carries the same bound (``max_deliver``), so even a message that
crashes or hangs its reader every time (redelivered each ``ack_wait``) is not redelivered
forever; the server then publishes a max-deliveries advisory, which ``MaxDeliveriesWatch``
turns into a dead letter too. The consumer has no ``backoff`` list on purpose: nats-server
(2.15) lets a configured ``backoff`` override the delay of a ``nak(delay)`` from the second
redelivery on (measured: 0.2 s asked, 1.2 s taken with backoff [1, 2, 3]), so the pause is
chosen here, per failure, with ``nak(delay)``.

Lives in the SDK because connectors may import only ``events``; services import it from here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import BadRequestError, NotFoundError
from prometheus_client import Counter

from events import subjects
from events.parking import ParkedMessage, ParkingLot, now
from events.skips import count_skip

log = structlog.get_logger("relaydesk.deadletter")

DEAD_LETTERS = Counter(
    "relaydesk_dead_letters_total",
    "Work messages terminated and parked as dead letters (undecodable, or failed every bounded redelivery)",
    ["reader", "stream"],
)


@dataclass(frozen=True)
class Redelivery:
    """How often, and how patiently, a failing work message is tried again."""

    max_deliver: int = 6
    # The pause before delivery n+1 after delivery n failed (the last value repeats).
    retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 300.0)
    # How long a delivery may go unanswered before the server hands it out again.
    ack_wait: float = 30.0
    # How long a reader that has done the work (a connector that sent a reply) tries again, in
    # place and still holding the message, to record it (report, ack) before handing it back:
    # a NATS restart of a few seconds does not hand a sent reply to another process to send.
    report_retry: float = 15.0

    def delay_after(self, delivered: int) -> float:
        if not self.retry_delays:
            return 0.0
        return self.retry_delays[max(0, min(delivered, len(self.retry_delays)) - 1)]

    def exhausted(self, delivered: int) -> bool:
        """True when delivery number ``delivered`` was the last one allowed."""
        return delivered >= self.max_deliver

    def apply(self, config: ConsumerConfig) -> ConsumerConfig:
        """``config`` with this bound (and no ``backoff``: see the module docstring)."""
        return dataclasses.replace(config, max_deliver=self.max_deliver, ack_wait=self.ack_wait, backoff=None)


def _settings(config: ConsumerConfig) -> dict[str, Any]:
    return {
        # Unset is the server's own default (-1, unbounded), as a consumer's info reports it.
        "max_deliver": -1 if config.max_deliver is None else config.max_deliver,
        "ack_wait": config.ack_wait,
        "backoff": list(config.backoff or []),
    }


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> str:
    """Create the durable ``config.durable_name`` on ``stream``, or bring one made by an older
    version (``max_deliver -1``) to ``config``'s redelivery settings in place (nats-server
    allows changing ``max_deliver``, ``ack_wait`` and ``backoff`` of a durable).
    Returns ``created``, ``updated``, ``unchanged`` or ``kept`` (the server refused the update)."""
    durable = config.durable_name
    assert durable is not None
    bound = log.bind(stream=stream, durable=durable)
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        # Named too: nats-py then creates it with $JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>,
        # a subject NATS permissions pin to one filter (services/bus/auth.py); the legacy
        # DURABLE.CREATE subject carries the filter only in its body.
        await js.add_consumer(stream, dataclasses.replace(config, name=durable))
        bound.info("consumer.created", **_settings(config))
        return "created"
    before, wanted = _settings(info.config), _settings(config)
    if before == wanted:
        return "unchanged"
    updated = dataclasses.replace(
        info.config, max_deliver=config.max_deliver, ack_wait=config.ack_wait, backoff=config.backoff
    )
    try:
        await js.add_consumer(stream, updated)
    except BadRequestError as err:
        # Keep running on the old settings: the readers still count deliveries themselves.
        bound.warning("consumer.update_refused", error=str(err), before=before, wanted=wanted)
        return "kept"
    bound.info("consumer.updated", before=before, after=wanted)
    return "updated"


def parked_record(msg: Msg, *, reader: str, error: str) -> ParkedMessage:
    meta = msg.metadata
    return ParkedMessage(
        stream=meta.stream,
        seq=meta.sequence.stream,
        subject=msg.subject,
        kind="dead_letter",
        reader=reader,
        error=error,
        parked_at=now(),
        data=msg.data or b"",
        headers=dict(msg.headers or {}),
        deliveries=meta.num_delivered or 0,
    )


async def record(lot: ParkingLot, parked: ParkedMessage) -> bool:
    """Park ``parked`` (once per stream message) and count it; True if it was new."""
    new = await lot.park(parked)
    if new:
        DEAD_LETTERS.labels(reader=parked.reader, stream=parked.stream).inc()
    log.error(
        "work.dead_lettered",
        reader=parked.reader,
        key=parked.key,
        nats_subject=parked.subject,
        deliveries=parked.deliveries,
        error=parked.error[:300],
        already_parked=not new,
    )
    return new


async def dead_letter(lot: ParkingLot, msg: Msg, *, reader: str, error: str) -> ParkedMessage:
    """Park ``msg`` as a dead letter, then terminate it (never delivered again)."""
    parked = parked_record(msg, reader=reader, error=error)
    await record(lot, parked)
    await msg.term()
    return parked


class MaxDeliveriesWatch:
    """Parks the messages the server stopped redelivering on its own (``max_deliver`` reached
    without a ``term``: the reader crashed or hung on the last delivery). Every replica listens;
    parking is create-only, so the message is parked once."""

    def __init__(self, nc: NATS, js: JetStreamContext, stream: str, durable: str, reader: str) -> None:
        self.nc = nc
        self.js = js
        self.stream = stream
        self.durable = durable
        self.reader = reader
        self.lot = ParkingLot(js)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        subject = subjects.max_deliveries_advisory(self.stream, self.durable)
        self._sub = await self.nc.subscribe(subject, cb=self._on_advisory)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as err:  # the connection is closing or gone: nothing to undo
                log.debug("deadletter.watch_unsubscribe_skipped", nats_subject=self._sub.subject, error=repr(err))
                count_skip("deadletter.watch_unsubscribe")
            self._sub = None

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            seq, deliveries = int(advisory["stream_seq"]), int(advisory.get("deliveries", 0))
        except (ValueError, KeyError, TypeError) as err:
            log.warning("deadletter.advisory_unreadable", nats_subject=msg.subject, error=repr(err))
            return
        subject, data, headers = "", b"", {}
        try:
            raw = await self.js.get_msg(self.stream, seq)
            subject, data, headers = raw.subject or "", raw.data or b"", dict(raw.headers or {})
        except Exception as err:  # a role that may not read its stream's messages (connectors), or NATS away
            # Parked all the same, without the payload: it stays in the stream, where
            # `relaydesk dlq retry` (tool or api role) reads it by sequence.
            log.warning("deadletter.payload_not_read", stream=self.stream, seq=seq, reader=self.reader, error=repr(err))
            count_skip("deadletter.payload_read")
        parked = ParkedMessage(
            stream=self.stream,
            seq=seq,
            subject=subject,
            kind="dead_letter",
            reader=self.reader,
            error=f"delivered {deliveries} times and never acknowledged (the reader crashed or hung on it)",
            parked_at=now(),
            data=data,
            headers=headers,
            deliveries=deliveries,
        )
        try:
            await record(self.lot, parked)
        except Exception as err:  # NATS away: said, and left to the operator
            log.warning(
                "deadletter.advisory_not_parked", stream=self.stream, seq=seq, reader=self.reader, error=repr(err)
            )
            count_skip("deadletter.advisory_park")
