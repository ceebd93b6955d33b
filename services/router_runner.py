"""The router process: folds the log into routing state, and while it holds the lease,
decides and appends. Policy lives in ``router``; this module only moves events and time.
The leading router's queue gauges: ``services.queue_gauges``.

Protocol: decisions are always made on state that already contains every decision this
instance appended before. After appending, the runner waits until its own appends have
come back through the log before it decides again, and every conversation decision is
appended with the conversation's last subject sequence, so a stale or deposed leader
gets a conflict instead of assigning a conversation twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from nats.aio.client import Client as NATS

from events import subjects
from events.objects import save_object
from events.skips import skipping
from events.stopping import cancel_and_wait
from events.storage_full import note_storage_full, storage_full
from events.store import Append, ConcurrencyError, EventStore, Tail
from router import snapshot
from router.decide import decide
from router.fold import evolve
from router.policy import RouterPolicy
from router.state import RouterState
from services import collector, tracing
from services.bus.connection import ServiceFailed
from services.bus.errors import NATS_ERRORS, NATS_UNAVAILABLE
from services.lease import Lease
from services.log_end import LogEndWatch
from services.metrics import DECIDE_SECONDS, LEADER, OFFERS, ROUTING_DECISIONS, measured
from services.queue_gauges import QueueGauges
from services.spacing import Spacing
from services.state_snapshots import read_state

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = structlog.get_logger(__name__)

SNAPSHOT_NAME = "router"
MAX_BACKOFF = 5.0  # seconds between lease attempts while NATS is away
OFFER_OUTCOMES = {
    "AgentOffered": "offered",
    "OfferAccepted": "accepted",
    "OfferDeclined": "declined",
    "OfferExpired": "expired",
}
TRACES_KEPT = 50_000  # conversations whose latest trace context is remembered (tracing on)
# Encoding a snapshot stops the loop (8 MB took 28 ms in bench route), storing it does not:
# at most this share of the router's time, whatever ``snapshot_every`` says (services.spacing).
# Below 1%, so a decision held up by an encode is rarer than the p99 of decisions (at 1%, the
# router's share of p99 at 500/s in bench route was 15-18 ms; at 0.25%, ~8 ms).
SNAPSHOT_DUTY = 0.0025


class RouterRunner:
    def __init__(
        self,
        nc: NATS,
        policy: RouterPolicy,
        *,
        instance_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tick: float = 0.2,
        lease_ttl: float = 5.0,
        snapshot_every: int = 5_000,
        use_snapshot: bool = True,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.store = EventStore(nc, self.js, reader="router")
        self.policy = policy
        self.instance_id = instance_id or f"router-{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.tick = tick
        self.lease_ttl = lease_ttl
        self.snapshot_every = snapshot_every
        self.use_snapshot = use_snapshot
        self.state = RouterState()
        self.pending_until = 0  # highest sequence we appended and have not yet folded
        self.decisions_appended = 0
        # Decision rounds run as leader, and the log position each began at (for tests and
        # status: that a router has looked at what is on the log, and decided nothing).
        self.rounds = 0
        self.round_seq = 0
        self._since_snapshot = 0
        self._saving: asyncio.Task[None] | None = None  # a snapshot being stored
        self._snapshot_spacing = Spacing(SNAPSHOT_DUTY)
        self.ready = asyncio.Event()  # caught up with the log as it stood at start
        # Tracing on: the trace context of each conversation's latest traced event, which a
        # decision on that conversation continues (oldest forgotten first).
        self._traces: OrderedDict[str, Mapping[str, str]] = OrderedDict()
        self.leading = asyncio.Event()
        # Walked while leading (services.queue_gauges), of the state as it is at each walk.
        self.queue_gauges = QueueGauges(lambda: self.state, lambda: self.clock(), self.leading)

    # -- state ----------------------------------------------------------------------

    async def _load_snapshot(self) -> None:
        if not self.use_snapshot:
            return
        state = await read_state(self.js, SNAPSHOT_NAME, reader="router")
        if state is not None:
            self.state = state
            log.info("router.snapshot_loaded", seq=self.state.last_seq, conversations=len(self.state.conversations))

    def _snapshot_due(self) -> bool:
        return (
            self._since_snapshot >= self.snapshot_every
            and self.leading.is_set()
            and (self._saving is None or self._saving.done())
            and self._snapshot_spacing.due()
        )

    def _save_soon(self) -> asyncio.Task[None]:
        """Encode the state now and store it in the background: decisions go on while the
        object store takes its chunks (one store at a time; ``_snapshot_due``)."""
        with self._snapshot_spacing.run():
            data = snapshot.dump(self.state)
        encoded = self._snapshot_spacing.last_seconds
        if self.ready.is_set():
            # What a snapshot holds is long-lived: frozen out of the collector's sight as at
            # catch-up, so a full collection walks only what came since (one walked all the
            # state grown since the start: 40-58 ms at 5,000-10,000 conversations in bench
            # route, ~0.3 s at 100,000 waiting). The young generations go first, so that their
            # cyclic garbage is collected rather than frozen; a frozen object that is dropped
            # is still freed by its reference count.
            gc.collect(1)
            gc.freeze()
        self._since_snapshot = 0
        self._saving = asyncio.create_task(self._store(data, self.state.last_seq, encoded), name="router-snapshot")
        return self._saving

    async def _store(self, data: bytes, seq: int, encoded: float) -> None:
        began = time.perf_counter()
        if not await save_object(
            self.js, subjects.SNAPSHOT_BUCKET, SNAPSHOT_NAME, data, skip_as="router.snapshot_save", seq=seq
        ):
            return
        log.info(
            "router.snapshot_saved",
            seq=seq,
            size=len(data),
            encode_ms=round(encoded * 1000, 1),
            store_ms=round((time.perf_counter() - began) * 1000, 1),
        )

    def _fold(self, tail: Tail) -> int:
        batch = tail.drain()
        live = self.ready.is_set()  # offers replayed at start were counted by whoever saw them live
        for stored in batch:
            outcome = OFFER_OUTCOMES.get(type(stored.event).__name__) if live else None
            if outcome is not None:
                OFFERS.labels(outcome=outcome).inc()
            if stored.trace is not None:
                self._remember_trace(stored.event, stored.trace)
            try:
                self.state = evolve(self.state, stored.seq, stored.subject, stored.event)
            except Exception as err:
                # An event the fold cannot apply: quarantined and skipped (its sequence counts,
                # so a replay after a snapshot does not meet it again).
                self.store.cannot_apply(stored, err)
                self.state.last_seq = max(self.state.last_seq, stored.seq)
        self._since_snapshot += len(batch)
        return len(batch)

    def _remember_trace(self, event: object, trace: Mapping[str, str]) -> None:
        conversation_id = getattr(event, "conversation_id", None)
        if conversation_id is None:
            return
        self._traces[conversation_id] = trace
        self._traces.move_to_end(conversation_id)
        if len(self._traces) > TRACES_KEPT:
            self._traces.popitem(last=False)

    def _decision_span(self, event: object) -> Span | None:
        conversation_id = getattr(event, "conversation_id", None)
        if conversation_id is None:
            return None
        attributes = {"relaydesk.decision": type(event).__name__, "relaydesk.conversation_id": conversation_id}
        return tracing.start("router.decide", self._traces.get(conversation_id), attributes=attributes)

    # -- deciding -------------------------------------------------------------------

    async def decide_once(self) -> int:
        """Decide on the current state and append; returns how many decisions stood."""
        if self.state.last_seq < self.pending_until:
            return 0  # our previous decisions are not folded yet
        started = time.perf_counter()
        now = self.clock()
        decisions = decide(self.state, now, self.policy)
        if not decisions:
            return 0
        # Tracing on: each decision in span ``router.decide``, continuing its conversation's trace.
        spans = [self._decision_span(d.event) for d in decisions] if tracing.enabled() else [None] * len(decisions)
        appends = [
            Append(d.event, expected=d.expected, trace=tracing.headers(span) if span is not None else None)
            for d, span in zip(decisions, spans, strict=True)
        ]
        try:
            results = await self.store.append_many(appends)
        finally:
            for span in spans:
                tracing.finish(span)
        DECIDE_SECONDS.observe(time.perf_counter() - started)
        stood = 0
        for decision, result, span in zip(decisions, results, spans, strict=True):
            if isinstance(result, ConcurrencyError):
                # Someone appended to that conversation since we folded it: we will see
                # their event and decide again on the new state.
                log.info("router.decision_conflict", decision=type(decision.event).__name__, subject=result.subject)
                continue
            stood += 1
            self.pending_until = max(self.pending_until, result)
            event = decision.event
            ROUTING_DECISIONS.labels(decision=type(event).__name__).inc()
            with tracing.using(span):
                # One per decision: debug (the log holds the decision, /metrics counts them).
                log.debug(
                    "router.decided",
                    decision=type(event).__name__,
                    conversation_id=getattr(event, "conversation_id", None),
                    customer_id=getattr(event, "customer_id", None),
                    agent_id=getattr(event, "agent_id", None),
                )
        self.decisions_appended += stood
        return stood

    # -- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        kv = await self.js.key_value(subjects.LEASE_BUCKET)
        lease = Lease(kv, "router", self.instance_id, ttl=self.lease_ttl)
        await self._load_snapshot()
        tail = await self.store.tail(subjects.EVENTS_ALL, self.state.last_seq + 1)
        try:
            caught_up_at = await self.store.last_seq()
        except BaseException:
            # NATS did not answer (relaydesk up starts the router again): its tail goes with it.
            with skipping("router.tail_close", subject=subjects.EVENTS_ALL):
                await tail.close()
            raise
        next_lease_check = 0.0
        backoff = self.lease_ttl / 3
        log_end = LogEndWatch(self.store, "router")
        gc_before: tuple[int, int, int] | None = None  # the collector's thresholds before catch-up
        log.info("router.started", instance=self.instance_id, from_seq=self.state.last_seq + 1)
        # Standing by until it leads: the leading router's queue gauges go with it, so without
        # this one a router outage looked, on /metrics, like nobody waiting (found by an audit).
        LEADER.labels("router", self.instance_id).set(0)
        measured(DECIDE_SECONDS)  # the router's histogram, exported by routers alone
        gauges = asyncio.create_task(self.queue_gauges.forever(), name="router-queue-gauges")
        try:
            while not stop.is_set():
                await tail.wait(timeout=self.tick)  # wake on an event or a tick
                self._fold(tail)
                try:
                    await log_end.check(self.state.last_seq)
                except ServiceFailed:
                    self._since_snapshot = 0  # this view is of another log: nothing of it is kept
                    raise
                if not self.ready.is_set() and self.state.last_seq >= caught_up_at:
                    self.ready.set()
                    # The state folded so far (a million objects at a long log) is long-lived:
                    # out of the collector's sight, a full collection no longer walks it in the
                    # middle of a decision (~0.3 s each, measured by bench decide); and the
                    # young generation is collected less often (services.collector).
                    gc_before = collector.settle_in()
                    log.info("router.caught_up", seq=self.state.last_seq, frozen_objects=gc.get_freeze_count())
                now = time.monotonic()
                try:
                    # A leader whose lease stopped counting (a pause, a suspended VM: no lease
                    # check came due on the monotonic clock meanwhile) checks before it decides.
                    if now >= next_lease_check or (self.leading.is_set() and not lease.held):
                        next_lease_check = now + self.lease_ttl / 3
                        await (lease.renew() if lease.held else lease.try_acquire())
                        if lease.unavailable:
                            # NATS is away: the lease is not held as far as we know. Back off.
                            next_lease_check = now + backoff
                            backoff = min(backoff * 2, MAX_BACKOFF)
                        else:
                            backoff = self.lease_ttl / 3
                        if lease.held and not self.leading.is_set():
                            await self._take_the_lead()
                        elif not lease.held and self.leading.is_set():
                            self._stand_down("lease lost" if not lease.unavailable else "NATS unavailable")
                    if self.leading.is_set() and self.ready.is_set():
                        self.round_seq = self.state.last_seq
                        await self.decide_once()
                        self.rounds += 1
                    if self._snapshot_due():
                        self._save_soon()
                except NATS_ERRORS as err:
                    # An append that may or may not have happened: stop deciding
                    # (the expected-sequence guards refuse whatever a stale leader appends),
                    # and take the lease again once NATS answers.
                    if storage_full(err):  # JetStream answers, and refuses to store: said as such
                        note_storage_full("router", err, instance=self.instance_id)
                    else:
                        log.warning("router.nats_unavailable", instance=self.instance_id, error=repr(err))
                    lease.forget()
                    if self.leading.is_set():
                        self._stand_down("NATS unavailable")
                    next_lease_check = time.monotonic() + backoff
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            await cancel_and_wait(gauges)
            with contextlib.suppress(*NATS_UNAVAILABLE):
                await tail.close()
            try:
                if self._saving is not None and not self._saving.done():
                    await asyncio.wait([self._saving])  # a snapshot being stored is finished, not cut off
                if lease.held and self.use_snapshot and self._since_snapshot:
                    with skipping("router.stop_snapshot"):
                        await self._save_soon()
            finally:
                # Even when the stop is cancelled while a snapshot is stored (``up`` cancels a
                # service still stopping after its grace): a standby takes over at once.
                if lease.held:
                    with skipping("router.lease_release"):
                        await lease.release()
            self.leading.clear()
            self.queue_gauges.clear()
            with contextlib.suppress(KeyError):
                LEADER.remove("router", self.instance_id)
            if gc_before is not None:
                collector.let_go(gc_before)  # what was frozen can be collected again once this router is gone
            log.info("router.stopped", instance=self.instance_id)

    async def _take_the_lead(self) -> None:
        # Decide only on state that contains everything appended before we took the lease:
        # a previous leader's last decisions, and ours whose outcome an outage left unknown
        # (an append that timed out may still have been stored).
        self.pending_until = max(self.pending_until, await self.store.last_seq())
        log.info("router.leading", instance=self.instance_id, from_seq=self.pending_until)
        self.leading.set()
        LEADER.labels("router", self.instance_id).set(1)

    def _stand_down(self, reason: str) -> None:
        log.warning("router.standing_down", instance=self.instance_id, reason=reason)
        self.leading.clear()
        LEADER.labels("router", self.instance_id).set(0)
        self.queue_gauges.clear()
