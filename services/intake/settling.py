"""The ``intake`` durable consumer and the settling of one delivery from it.

Its configuration (every inbound channel, bounded redelivery, the configured ack wait), its
preparation before a worker starts, and ``settle``: ack a message once its events are in the
log, park one that never decodes or names another channel, hand a failing one back after a
delay and park it after ``max_deliver`` deliveries. The raw pull loop
(``services.intake.worker``) and the FastStream subscriber (``register``, for tests and tools
that run intake on a broker) both settle through here; what recording a message means is
``services.intake.consumer.Intake``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

from connectors.sdk.deadletter import MaxDeliveriesWatch, Redelivery, dead_letter, ensure_consumer
from events import subjects
from events.codec import decode_inbound
from events.errors import describe_error
from events.model import InboundMessage, InboundRecord
from events.parking import ParkingLot
from events.storage_full import storage_full
from services import tracing
from services.config import IntakeSettings
from services.intake.consumer import STREAM_SEQ, STREAM_TIME, Intake
from services.intake.shares import MAX_ACK_PENDING, widen
from services.intake.storage_wait import StorageWait

log = structlog.get_logger(__name__)

DURABLE = subjects.INTAKE_DURABLE
INBOX_PREFIX = b"_INBOX_intake."
READER = "intake"
# A failing inbound message is tried 6 times over about 7.5 minutes, then dead-lettered. One
# taken by an intake that died before acking it goes to another after the ack wait
# (``[intake] ack_wait_seconds``, 5 s by default, not JetStream's 30 s: chat's SLA is 60 s).
REDELIVERY = Redelivery(ack_wait=IntakeSettings().ack_wait_seconds)


def redelivery_for(settings: IntakeSettings) -> Redelivery:
    """The intake consumer's redelivery with the configured ack wait."""
    return dataclasses.replace(REDELIVERY, ack_wait=float(settings.ack_wait_seconds))


def consumer_config(redelivery: Redelivery = REDELIVERY) -> ConsumerConfig:
    """The ``intake`` durable: every inbound channel, at most ``max_deliver`` deliveries."""
    return redelivery.apply(
        ConsumerConfig(
            durable_name=DURABLE,
            filter_subject=subjects.INBOUND_ALL,
            ack_policy=JsAckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            # Room for a burst of one sender beside everyone else's (services.intake.shares).
            max_ack_pending=MAX_ACK_PENDING,
        )
    )


async def prepare(nc: NATS, redelivery: Redelivery = REDELIVERY) -> MaxDeliveriesWatch:
    """Before the broker starts: create the durable, or bring one an older version made
    (``max_deliver -1``, JetStream's default 30 s ack wait) to the bounded settings and the
    configured ack wait in place; and park what the server stops redelivering on its own (a
    message that crashed intake on every delivery)."""
    js = nc.jetstream()
    await ensure_consumer(js, subjects.INBOUND_STREAM, consumer_config(redelivery))
    await widen(js, DURABLE)  # one an older version made has the server's 1,000
    watch = MaxDeliveriesWatch(nc, js, subjects.INBOUND_STREAM, DURABLE, READER)
    await watch.start()
    return watch


def register(broker: NatsBroker, intake: Intake, *, workers: int = 4, redelivery: Redelivery = REDELIVERY) -> None:
    """Subscribe intake to ``rd.inbound.>`` on ``broker`` (durable, ack after append).

    A message that does not decode is dead-lettered at once; one whose handling fails is
    handed back after ``redelivery.delay_after(n)`` and dead-lettered (terminated, parked in
    ``rd_parked``) after ``redelivery.max_deliver`` deliveries: never a hot loop."""
    lot = ParkingLot(intake.store.js)

    @broker.subscriber(
        subjects.INBOUND_ALL,
        stream=JStream(subjects.INBOUND_STREAM, declare=False),
        durable=DURABLE,
        config=consumer_config(redelivery),
        pull_sub=PullSub(batch_size=50, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,
        max_workers=workers,
        # FastStream fetches into ``_INBOX.<nuid>`` unless told otherwise; under `relaydesk up`'s
        # NATS users each role may read only its own inbox (``_INBOX_<user>``).
        inbox_prefix=INBOX_PREFIX,
    )
    async def on_inbound(msg: NatsMessage) -> None:
        await settle(intake, lot, msg.raw_message, redelivery)


async def settle(
    intake: Intake,
    lot: ParkingLot,
    raw: Msg,
    redelivery: Redelivery = REDELIVERY,
    *,
    record: InboundRecord | msgspec.DecodeError | msgspec.ValidationError | None = None,
    earlier: Sequence[tuple[str, str]] = (),
    storage: StorageWait | None = None,
) -> None:
    """Record one delivered inbound message and settle it: ack after its events are in the
    log; park an undecodable one at once; hand a failing one back after
    ``redelivery.delay_after(n)`` and park it after ``redelivery.max_deliver`` deliveries.
    ``record``: the message already decoded (or its decode error), when the caller did it.
    In span ``intake.record``, continuing the connector's trace, when tracing is on (off: a
    no-op). Nothing is awaited before ``intake.handle`` takes the sender's lock (ordering).
    ``storage``: the worker's wait for a full JetStream (``services.intake.storage_wait``)."""
    attributes = {"messaging.system": "nats", "messaging.destination.name": raw.subject}
    with tracing.span("intake.record", raw.headers, kind="consumer", attributes=attributes):
        await _record_and_settle(intake, lot, raw, redelivery, record, earlier, storage)


async def _record_and_settle(
    intake: Intake,
    lot: ParkingLot,
    raw: Msg,
    redelivery: Redelivery,
    record: InboundRecord | msgspec.DecodeError | msgspec.ValidationError | None,
    earlier: Sequence[tuple[str, str]],
    storage: StorageWait | None = None,
) -> None:
    delivered = raw.metadata.num_delivered or 1
    STREAM_SEQ.set(raw.metadata.sequence.stream)  # this task's own context: its turn among its sender's
    STREAM_TIME.set(raw.metadata.timestamp)  # when JetStream stored it: bounds its received time

    def bound() -> Any:
        # Bound only when something is logged: a bind costs a logger (no caching, by config).
        return log.bind(nats_subject=raw.subject, stream_seq=raw.metadata.sequence.stream, delivery=delivered)

    try:
        if record is None:
            record = decode_record(raw.data)
        if not isinstance(record, InboundRecord):
            # It never will decode: parked at once rather than redelivered.
            bound().warning("intake.undecodable", error=describe_error(record)[:300])
            await dead_letter(lot, raw, reader=READER, error=describe_error(record))
            return
        if isinstance(record, InboundMessage) and raw.subject != subjects.inbound(record.channel):
            # A connector speaks only for its own channel: an SMS connector's user must not
            # open an email conversation (a reply would go out by email to whoever it named).
            reason = f"names channel {record.channel!r} but was published on {raw.subject}"
            bound().warning("intake.wrong_channel", channel=record.channel, parked=True)
            await dead_letter(lot, raw, reader=READER, error=reason)
            return
        recorded = record

        async def handle() -> None:
            if earlier:
                await intake.handle(recorded, subject=raw.subject, earlier=earlier)
            else:  # (the signature older subclasses, e.g. tests' doubles, override)
                await intake.handle(recorded, subject=raw.subject)

        try:
            try:
                await handle()
            except Exception as first:
                if storage is None or not storage_full(first):
                    raise
                failed = await storage.retry(raw.metadata.sequence.stream, handle, first)
                if failed is not None:
                    raise failed from None
        except Exception as err:
            if intake.failing_since is None:
                intake.failing_since = time.monotonic()
            intake.last_failure = describe_error(err)[:300]
            if redelivery.exhausted(delivered):
                bound().exception("intake.failed_for_good", max_deliver=redelivery.max_deliver)
                await dead_letter(lot, raw, reader=READER, error=describe_error(err))
            else:
                delay = redelivery.delay_after(delivered)
                bound().exception("intake.failed", retry_in_s=delay, max_deliver=redelivery.max_deliver)
                await raw.nak(delay=delay)
            return
        intake.failing_since = None
        await raw.ack()  # a publish, not a request: acks are not serialised behind each other
    except Exception:
        # Parking or acking failed (NATS away): the server redelivers it after ack_wait.
        bound().exception("intake.settle_failed")
        raise


def decode_record(data: bytes) -> InboundRecord | msgspec.DecodeError | msgspec.ValidationError:
    """The record, or why it does not decode."""
    try:
        return decode_inbound(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        return err
