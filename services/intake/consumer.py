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

import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub

from events import subjects
from events.codec import decode_inbound
from events.model import CustomerEvent, InboundMessage
from events.store import Append, ConcurrencyError, EventStore, StoredEvent
from services.config import IntakeSettings
from services.identity import IdentityDirectory, IdentityRules, InvalidAddress, identity_for
from services.intake.language import LanguageDetector
from services.intake.plan import Triage, customer_guard, fold_history, is_automatic, plan
from services.intake.rules import RoutingRules

log = structlog.get_logger(__name__)

DURABLE = "intake"
MAX_CONFLICT_RETRIES = 12


class Intake:
    def __init__(
        self,
        store: EventStore,
        directory: IdentityDirectory,
        settings: IntakeSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
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

    async def handle(self, message: InboundMessage) -> str | None:
        """Record one inbound message; returns its conversation id (None if dropped)."""
        bound = log.bind(channel=message.channel, provider_message_id=message.provider_message_id)
        try:
            triage = self.triage(message)
        except InvalidAddress as err:
            # The provider will not send a better address by retrying: drop, loudly.
            bound.warning("intake.dropped", reason=str(err), sender=message.sender)
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


def register(broker: NatsBroker, intake: Intake, *, workers: int = 4) -> None:
    """Subscribe intake to ``rd.inbound.>`` on ``broker`` (durable, ack after append)."""

    @broker.subscriber(
        subjects.INBOUND_ALL,
        stream=JStream(subjects.INBOUND_STREAM, declare=False),
        durable=DURABLE,
        pull_sub=PullSub(batch_size=50, timeout=1.0),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_workers=workers,
    )
    async def on_inbound(msg: NatsMessage) -> None:
        try:
            await intake.handle(decode_inbound(msg.body))
        except Exception:
            # Nacked for redelivery by FastStream; say why here, with our own ids bound.
            log.exception("intake.failed", nats_subject=msg.raw_message.subject)
            raise
