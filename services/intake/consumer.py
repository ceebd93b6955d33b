"""Intake: inbound provider messages become customers, conversations and routing requests.

Consumes ``rd.inbound.>`` through the durable JetStream pull consumer ``intake``
(``services.intake.settling``: its configuration, acks, redelivery and dead letters): in
service, a raw pull loop (``services.intake.worker``: ``fetch(batch)``, many messages in
flight, no thread hop); ``settling.register`` keeps a FastStream subscriber with the same
handling for the tests and tools that run intake on a broker. A message is acked only after its
events are in the log, so a crash redelivers it, and the plan's dedupe on the provider
message id makes the redelivery a no-op. A customer's history is read with batched direct
gets (``EventStore.read_customer_direct``); one this message created is not read at all (the
first append's customer guard catches whatever a racing process wrote since).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import random
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter

from events import subjects
from events.model import CustomerEvent, InboundMessage, InboundRecord, ReplyOutcomeReported
from events.skips import skipping
from events.store import Append, ConcurrencyError, EventStore, reading_as
from services import tracing
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.identity.addresses import IdentityRules, InvalidAddress, identity_for, mask
from services.intake.customer_history import CustomerHistory
from services.intake.histories import Histories
from services.intake.language import LanguageDetector
from services.intake.outcomes import record_outcome
from services.intake.plan import Triage, customer_guard, is_automatic, plan
from services.intake.rules import RoutingRules
from services.intake.turns import SenderTurns, Ticket

log = structlog.get_logger(__name__)

RECORDED = Counter(
    "relaydesk_intake_recorded_total",
    "Inbound messages intake recorded on the log, by channel and whether the message made a new customer",
    ["channel", "new_customer"],
)

MAX_CONFLICT_RETRIES = 12
# How long a message waits for an earlier one of the same sender that another intake process
# holds (``services.intake.ordering``) before it is recorded anyway (that one was dropped,
# or is failing towards its dead letter).
ORDER_WAIT_S = 5.0
ORDER_POLL_S = 0.005
# The stream sequence of the delivery being handled (set by ``settle``, one per task): a
# sender's messages held here are recorded lowest sequence first (services.intake.turns).
STREAM_SEQ: contextvars.ContextVar[int | None] = contextvars.ContextVar("intake_stream_seq", default=None)
# When JetStream stored that delivery's message (``services.intake.plan.received_at``).
STREAM_TIME: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("intake_stream_time", default=None)
# Senders whose identity is kept: asked for three times a message, and a phone parse is dear.
IDENTITY_CACHE = 16_384


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
        # One sender's messages one at a time, lowest stream sequence first (services.intake.turns).
        self.turns = SenderTurns()
        self.histories = Histories(self.store)
        # Since when every message taken has failed to be recorded (None: the last one was):
        # /readyz says so (services.health.checks.intake_check) rather than ready.
        self.failing_since: float | None = None
        self.last_failure = ""
        # A pure function of the address and the rules (fixed for this process's life).
        self._identity = functools.lru_cache(maxsize=IDENTITY_CACHE)(self._identity_uncached)

    async def warm_up(self) -> None:
        """Before the first batch: the identity HMAC key and the bucket's legacy check, read
        once here rather than by each of the first batch's hundreds of tasks at once (each
        would read the key again; a late one would find the bucket no longer empty and read
        every missing identity twice for the process's life)."""
        with skipping("intake.warm_up"):  # NATS not there yet: the first messages read them instead
            await self.directory.warm_up()

    def _identity_uncached(self, channel: str, sender: str, platform: str | None) -> str:
        return identity_for(channel, sender, platform=platform, rules=self.identity_rules)

    def _lock(self, customer_id: str) -> asyncio.Lock:
        lock = self._customer_locks.get(customer_id)
        if lock is None:
            lock = asyncio.Lock()
            self._customer_locks[customer_id] = lock
        return lock

    def triage(self, message: InboundMessage) -> Triage:
        identity = self._identity(message.channel, message.sender, message.metadata.get("platform"))
        match = self.rules.match(message.text, message.channel, recipient=message.recipient)
        return Triage(
            identity=identity,
            # A connector that asked (the voice menu) names the language; else it is detected.
            language=message.metadata.get("language") or self.detector.detect(message.text),
            skills=match.skills,
            priority=match.priority,
        )

    def identity_of(self, message: InboundMessage) -> str | None:
        """The sender's identity (what orders a sender's messages), None if it has none."""
        try:
            return self._identity(message.channel, message.sender, message.metadata.get("platform"))
        except InvalidAddress:
            return None

    async def handle(
        self, record: InboundRecord, *, subject: str | None = None, earlier: Sequence[tuple[str, str]] = ()
    ) -> str | None:
        """Record one record from ``rd.inbound.<channel>``: a customer's message or a
        connector's reply outcome. Returns the conversation id it was recorded on (None if
        nothing was recorded). ``subject``: where it was published, when known. ``earlier``:
        (channel, provider message id) of the same sender's earlier messages that another
        intake process holds: this one waits for them to be recorded first."""
        if isinstance(record, ReplyOutcomeReported):
            return await self.handle_outcome(record, subject=subject)
        return await self.handle_message(record, earlier=earlier)

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

    async def handle_message(self, message: InboundMessage, *, earlier: Sequence[tuple[str, str]] = ()) -> str | None:
        """Record one inbound message; returns its conversation id (None if dropped).

        A sender's messages held here are recorded lowest stream sequence first (the order
        they were published; ``SenderTurns``, registered before the first await), each once
        the ``earlier`` ones another process holds are recorded (or ``ORDER_WAIT_S`` passed)."""
        bound = log.bind(channel=message.channel, provider_message_id=message.provider_message_id)
        try:
            triage = self.triage(message)
        except InvalidAddress as err:
            # The provider will not send a better address by retrying: drop, loudly.
            bound.warning("intake.dropped", reason=str(err))
            return None
        sender = triage.identity
        ticket = self.turns.hold(sender, STREAM_SEQ.get(), (message.channel, message.provider_message_id))
        try:
            if earlier:
                await self._wait_for_earlier(sender, ticket, earlier, bound)
            async with self.turns.turn(sender, ticket):  # one of the sender's messages at a time
                return await self._resolve_and_record(message, triage, bound)
        finally:
            self.turns.leave(sender, ticket)

    async def _wait_for_earlier(
        self, sender: str, ticket: Ticket, earlier: Sequence[tuple[str, str]], bound: Any
    ) -> None:
        """Until the ``earlier`` messages are on the customer's history or held here before
        this one (its turn comes after theirs), or ``ORDER_WAIT_S`` passed: without holding
        the sender's turn, which a redelivered earlier message needs."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ORDER_WAIT_S
        customer_id: str | None = None
        while True:
            here = self.turns.held_before(sender, ticket, earlier)
            missing = [key for key in earlier if key not in here]
            if missing and customer_id is None:
                customer_id = await self.directory.lookup(sender)
            if missing and customer_id is not None:
                async with self._lock(customer_id):  # Histories reads one at a time per customer
                    seen = (await self.read_history(customer_id)).seen
                    missing = [key for key in missing if key not in seen]
            if not missing:
                return
            if loop.time() >= deadline:
                bound.warning("intake.order_wait_expired", waited_s=ORDER_WAIT_S, missing=[k[1] for k in missing][:5])
                return
            # No customer yet: its first message is not recorded either; look again less often.
            await asyncio.sleep(ORDER_POLL_S if customer_id is not None else ORDER_POLL_S * 10)

    async def _resolve_and_record(self, message: InboundMessage, triage: Triage, bound: Any) -> str | None:
        for _ in range(MAX_CONFLICT_RETRIES):
            if is_automatic(message):
                # Automatic mail never creates a customer: only a known one's thread records it.
                known = await self.directory.lookup(triage.identity)
                if known is None:
                    bound.info("intake.automatic_dropped", auto=message.metadata.get("auto"))
                    return None
                customer_id, created = known, False
            else:
                customer_id, created = await self.directory.resolve(triage.identity)
            async with self._lock(customer_id):
                # A customer this call created (a fresh id) has nothing on its subjects but what
                # a racing process appended since, and the first append's guard (expected 0 on
                # the whole customer) catches that and reads again. One round trip saved.
                history = CustomerHistory() if created else await self.read_history(customer_id)
                if not history.erased:
                    return await self._record(
                        message, triage, customer_id, created, history, bound.bind(customer_id=customer_id)
                    )
            # The address still names an erased customer (a merge or a link raced the erasure):
            # that person is gone for good, so the message starts a new customer.
            if await self.directory.forget_if(triage.identity, customer_id):
                bound.warning("intake.erased_customer_address", customer_id=customer_id, identity=mask(triage.identity))
        raise RuntimeError(
            f"intake: the sender's address kept naming erased customers ({customer_id}); giving up for redelivery"
        )

    async def _record(
        self,
        message: InboundMessage,
        triage: Triage,
        customer_id: str,
        created: bool,
        history: CustomerHistory,
        bound: Any,
    ) -> str | None:
        for attempt in range(MAX_CONFLICT_RETRIES):
            if attempt:
                history = await self.read_history(customer_id)
            events = plan(
                history, customer_id, message, triage, self.clock(), language=self.detector, stored=STREAM_TIME.get()
            )
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
                        Append(
                            event,
                            expected=expected,
                            expected_subject=customer_guard(target),
                            trace=tracing.headers(),  # the message's trace, read on by router and delivery
                        )
                    )
            except ConcurrencyError:
                # Another replica (or the router) wrote to this customer: read again, after
                # a jittered pause so racing replicas do not collide in step.
                bound.debug("intake.conflict_retry", attempt=attempt)
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
                continue
            conversation_id = getattr(events[-1], "conversation_id", None)
            RECORDED.labels(channel=message.channel, new_customer="true" if created else "false").inc()
            # One per message: debug (the log holds what was recorded, RECORDED counts it).
            bound.debug(
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

    async def read_history(self, customer_id: str) -> CustomerHistory:
        """The customer's history and that of every customer merged into it (``CustomersMerged``
        on its ``_customer`` subject), merges of merges included: what was appended since this
        process last read it, folded on (``services.intake.histories``)."""
        return await self.histories.read(customer_id)
