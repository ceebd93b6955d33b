"""Intake: inbound provider messages become customers, conversations and routing requests.

Consumes ``rd.inbound.>`` through a durable JetStream pull consumer (FastStream); a message is
acked only after its events are in the log, so a crash redelivers it, and the plan's dedupe
on the provider message id makes the redelivery a no-op.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

from connectors.sdk.deadletter import MaxDeliveriesWatch, Redelivery, dead_letter, ensure_consumer
from events import subjects
from events.codec import decode_inbound
from events.model import CustomerEvent, InboundMessage, InboundRecord, ReplyOutcomeReported
from events.parking import ParkingLot, describe_error
from events.store import Append, ConcurrencyError, EventStore, StoredEvent, reading_as
from services.config import IntakeSettings
from services.identity import IdentityDirectory, IdentityRules, InvalidAddress, identity_for
from services.intake.language import LanguageDetector
from services.intake.outcomes import record_outcome
from services.intake.plan import Triage, customer_guard, fold_history, is_automatic, plan
from services.intake.rules import RoutingRules

log = structlog.get_logger(__name__)

DURABLE = "intake"
INBOX_PREFIX = b"_INBOX_intake."
READER = "intake"
# A failing inbound message is tried 6 times over about 7.5 minutes, then dead-lettered.
REDELIVERY = Redelivery()
MAX_CONFLICT_RETRIES = 12


class Intake:
    def __init__(
        self,
        store: EventStore,
        directory: IdentityDirectory,
        settings: IntakeSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = reading_as(store, "intake")  # the name its quarantined reads go by
        self.directory = directory
        self.settings = settings
        self.clock = clock
        self.detector = LanguageDetector(settings.languages, settings.default_language)
        self.rules = RoutingRules(settings.rules, dict(settings.default_skills))
        self.identity_rules = IdentityRules.from_settings(settings)
        # One customer's messages are recorded one at a time in this process (a provider
        # batch often holds several from the same person): they would only conflict on the
        # customer guard otherwise. Other intake replicas are kept apart by that guard.
        self._customer_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, customer_id: str) -> asyncio.Lock:
        lock = self._customer_locks.get(customer_id)
        if lock is None:
            lock = asyncio.Lock()
            self._customer_locks[customer_id] = lock
        return lock

    def triage(self, message: InboundMessage) -> Triage:
        identity = identity_for(
            message.channel,
            message.sender,
            platform=message.metadata.get("platform"),
            rules=self.identity_rules,
        )
        match = self.rules.match(message.text, message.channel, recipient=message.recipient)
        return Triage(
            identity=identity,
            language=self.detector.detect(message.text),
            skills=match.skills,
            priority=match.priority,
        )

    async def handle(self, record: InboundRecord, *, subject: str | None = None) -> str | None:
        """Record one record from ``rd.inbound.<channel>``: a customer's message or a
        connector's reply outcome. Returns the conversation id it was recorded on (None if
        nothing was recorded). ``subject``: where it was published, when known."""
        if isinstance(record, ReplyOutcomeReported):
            return await self.handle_outcome(record, subject=subject)
        return await self.handle_message(record)

    async def handle_outcome(self, report: ReplyOutcomeReported, *, subject: str | None = None) -> str | None:
        """``MessageSent`` / ``DeliveryFailed`` on the reply's conversation, once per reply
        (see ``services.intake.outcomes``); the conversation id, None if nothing appended.
        A report published on another channel's subject than it names is dropped: a
        connector may speak only for its own channel's replies."""
        if subject is not None and subject != subjects.inbound(report.channel):
            log.warning(
                "intake.outcome_dropped",
                reason="published on another channel's subject",
                nats_subject=subject,
                channel=report.channel,
                reply_id=report.reply_id,
                customer_id=report.customer_id,
                conversation_id=report.conversation_id,
            )
            return None
        seq = await record_outcome(self.store, report)
        return report.conversation_id if seq is not None else None

    async def handle_message(self, message: InboundMessage) -> str | None:
        """Record one inbound message; returns its conversation id (None if dropped)."""
        bound = log.bind(channel=message.channel, provider_message_id=message.provider_message_id)
        try:
            triage = self.triage(message)
        except InvalidAddress as err:
            # The provider will not send a better address by retrying: drop, loudly.
            bound.warning("intake.dropped", reason=str(err))
            return None
        if is_automatic(message):
            # Automatic mail never creates a customer: only a known one's thread records it.
            known = await self.directory.lookup(triage.identity)
            if known is None:
                bound.info("intake.automatic_dropped", auto=message.metadata.get("auto"))
                return None
            customer_id, created = known, False
        else:
            customer_id, created = await self.directory.resolve(triage.identity)
        bound = bound.bind(customer_id=customer_id)
        async with self._lock(customer_id):
            return await self._record(message, triage, customer_id, created, bound)

    async def _record(
        self, message: InboundMessage, triage: Triage, customer_id: str, created: bool, bound: Any
    ) -> str | None:
        for attempt in range(MAX_CONFLICT_RETRIES):
            history = fold_history(await self.read_family(customer_id), customer_id)
            events = plan(history, customer_id, message, triage, self.clock())
            if not events:
                bound.info("intake.nothing_to_record", automatic=is_automatic(message))
                return None
            # Usually the customer's own subjects; after a merge, a conversation the merged
            # customer opened continues on that customer's subjects (nothing is moved).
            last = events[-1]
            target = last.customer_id if isinstance(last, CustomerEvent) else customer_id
            expected = history.seqs.get(target, 0)
            try:
                for event in events:
                    # Each append guards the whole customer: a racing intake (another
                    # replica, another channel) makes us re-read rather than fork.
                    expected = await self.store.append(
                        Append(event, expected=expected, expected_subject=customer_guard(target))
                    )
            except ConcurrencyError:
                # Another replica (or the router) wrote to this customer: read again, after
                # a jittered pause so racing replicas do not collide in step.
                bound.debug("intake.conflict_retry", attempt=attempt)
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
                continue
            conversation_id = getattr(events[-1], "conversation_id", None)
            bound.info(
                "intake.recorded",
                conversation_id=conversation_id,
                new_customer=created,
                language=triage.language,
                skills=sorted(triage.skills),
                # A redelivery that completed what a crash cut short (services.intake.plan).
                completed=(message.channel, message.provider_message_id) in history.seen,
            )
            return conversation_id
        raise RuntimeError(f"intake: customer {customer_id} kept changing; giving up for redelivery")

    async def read_family(self, customer_id: str) -> list[StoredEvent]:
        """The customer's history and that of every customer merged into it (``CustomersMerged``
        on its ``_customer`` subject), merges of merges included."""
        events: list[StoredEvent] = []
        todo, seen = [customer_id], {customer_id}
        while todo:
            current = todo.pop()
            own = await self.store.read_customer(current)
            events.extend(own)
            for merged in sorted(fold_history(own, current).merged - seen):
                seen.add(merged)
                todo.append(merged)
        return events


def consumer_config(redelivery: Redelivery = REDELIVERY) -> ConsumerConfig:
    """The ``intake`` durable: every inbound channel, at most ``max_deliver`` deliveries."""
    return redelivery.apply(
        ConsumerConfig(
            durable_name=DURABLE,
            filter_subject=subjects.INBOUND_ALL,
            ack_policy=JsAckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
        )
    )


async def prepare(nc: NATS, redelivery: Redelivery = REDELIVERY) -> MaxDeliveriesWatch:
    """Before the broker starts: create the durable, or bring one an older version made
    (``max_deliver -1``) to the bounded settings in place; and park what the server stops
    redelivering on its own (a message that crashed intake on every delivery)."""
    js = nc.jetstream()
    await ensure_consumer(js, subjects.INBOUND_STREAM, consumer_config(redelivery))
    watch = MaxDeliveriesWatch(nc, js, subjects.INBOUND_STREAM, DURABLE, READER)
    await watch.start()
    return watch


def register(
    broker: NatsBroker, intake: Intake, *, workers: int = 4, redelivery: Redelivery = REDELIVERY
) -> None:
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
        raw = msg.raw_message
        delivered = raw.metadata.num_delivered or 1
        bound = log.bind(nats_subject=raw.subject, stream_seq=raw.metadata.sequence.stream, delivery=delivered)
        try:
            try:
                record = decode_inbound(msg.body)
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                # It never will decode: parked at once rather than redelivered.
                bound.warning("intake.undecodable", error=describe_error(err)[:300])
                await dead_letter(lot, raw, reader=READER, error=describe_error(err))
                return
            try:
                await intake.handle(record, subject=raw.subject)
            except Exception as err:
                if redelivery.exhausted(delivered):
                    bound.exception("intake.failed_for_good", max_deliver=redelivery.max_deliver)
                    await dead_letter(lot, raw, reader=READER, error=describe_error(err))
                else:
                    delay = redelivery.delay_after(delivered)
                    bound.exception("intake.failed", retry_in_s=delay, max_deliver=redelivery.max_deliver)
                    await msg.nack(delay=delay)
                return
            await msg.ack()
        except Exception:
            # Parking or acking failed (NATS away): the server redelivers it after ack_wait.
            bound.exception("intake.settle_failed")
            raise
