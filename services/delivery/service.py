"""The delivery service: follows the log and notifies each agent's endpoints.

It folds ``rd.evt.>`` from the start (the same fold as the router, so it knows tiers,
requirements and waits), and for every fact after its checkpoint (``delivery.checkpoint``
in the ``rd_state`` KV bucket) creates one delivery record per (endpoint, agent) in the
``rd_deliveries`` bucket, then delivers it: up to ``max_attempts`` tries with exponential
backoff and full jitter on 5xx, 408/429, timeouts and connection errors (never sooner than a
429's or 503's ``Retry-After``, up to ``backoff_max``); a 4xx other than those, or the last
failed try, dead-letters the record (status ``failed``, reason kept). A concurrency slot is held
for one attempt only, not while backing off, and one endpoint gets at most ``endpoint_limit``
of them: a slow or broken endpoint does not hold up the notices to the others.
An offer or assignment notified late that the log has already answered is left out, and a
record of one is not tried again (``late_notices``).

A watcher on the bucket picks up records an operator asked to retry
(``POST /v1/deliveries/{id}/retry`` sets ``retry_requested``) and records left ``pending``
by a previous run that stopped mid-delivery. One delivery service is active at a time (lease
``delivery`` in ``rd_leases``); another one folds the log as a hot standby and takes over from
the checkpoint when the lease lapses. Delivery is at least once: a crash between a successful
send and its record being saved sends it again (receivers dedupe on ``X-Relaydesk-Delivery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events import subjects
from events.skips import skipping
from events.stopping import cancel_all_and_wait, cancel_and_wait
from events.store import EventStore, StoredEvent, reading_as
from services import tracing
from services.bus.errors import NATS_ERRORS, NATS_UNAVAILABLE
from services.delivery import erasure, records
from services.delivery.attempts import Rounds
from services.delivery.endpoints import endpoint_ids, endpoints_for, settings_problems
from services.delivery.late_notices import LATE_AFTER, moot, superseded
from services.delivery.notices import Facts, Notice
from services.delivery.records import DeliveryRecord
from services.delivery.senders import Senders
from services.delivery.settings import DeliverySettings, Endpoint
from services.delivery.slack_settings import SlackSettings
from services.delivery.snapshots import FactSnapshots
from services.lease import Lease
from services.log_end import LogEndWatch
from services.metrics import LEADER

log = structlog.get_logger(__name__)

CHECKPOINT_KEY = "delivery.checkpoint"
# How long a stopping instance lets deliveries in flight finish (see ``_finish_in_flight``).
STOP_GRACE_SECONDS = 5.0
TRACES_KEPT = 10_000  # facts whose trace context is remembered for their deliveries (tracing on)
WRITES_KEPT = 100_000  # records whose last write by this instance is remembered (see ``_written``)


class DeliveryService:
    def __init__(
        self,
        store: EventStore,
        settings: DeliverySettings,
        *,
        console_url: str,
        api_url: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        instance_id: str = "",
        replicas: int = 1,
        slack: SlackSettings | None = None,
        use_snapshot: bool = True,
        message_days: int = 0,
    ) -> None:
        self.store = reading_as(store, "delivery")
        self.replicas = replicas  # of the rd_deliveries bucket it creates ([nats] replicas)
        self.settings = settings
        self.endpoints = endpoint_ids(settings)
        self.facts = Facts(console_url=console_url, api_url=api_url, preview_lines=settings.preview_lines)
        # [retention] message_days: how long the Slack posts an erasure takes back stay reachable.
        self.senders = Senders(settings, slack=slack, js=self.store.js, message_days=message_days)
        self.clock = clock
        self.checkpoint = 0
        self._kv: KeyValue | None = None
        self._state_kv: KeyValue | None = None
        # One round of attempts at a record (concurrency gates, backoff, dead letters).
        self.rounds = Rounds(
            settings,
            self.endpoints,
            self.senders,
            clock=clock,
            save=self._save,
            superseded=lambda record: superseded(self.facts.state, record),
        )
        self._inflight: set[str] = set()
        # The revision of this instance's last write of each record. The watcher sees every
        # write to the bucket, some time later: a record's creation seen after its delivery
        # ended looks like a record left pending, and was sent again. An entry older than
        # this instance's last write is a state it has moved past.
        self._written: OrderedDict[str, int] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        # Facts after the checkpoint not yet turned into records: (seq, notices).
        # (sequence, its notices, whether the fact was already late when folded: see late_notices)
        self._pending: deque[tuple[int, list[Notice], bool]] = deque()
        self.instance_id = instance_id or f"delivery-{uuid.uuid4().hex[:8]}"
        self.lease_ttl = settings.lease_seconds
        # Tracing on: the trace context of recent facts by stream sequence, continued by the
        # deliveries they cause (a delivery resumed after a restart: from its record's).
        self._traces: OrderedDict[int, Mapping[str, str]] = OrderedDict()
        # What /readyz says: starting, idle (nothing to deliver), leader or standby.
        self.role = "starting"
        self.snapshots = FactSnapshots(self.store, self.facts, enabled=use_snapshot, every=settings.snapshot_every)

    # -- running ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        problems = settings_problems(self.settings, self.senders.slack)
        if problems:
            raise SystemExit("delivery: " + "; ".join(problems))
        if not self.endpoints or not self.settings.enabled:
            reason = "no [[delivery.endpoints]] configured" if self.settings.enabled else "disabled"
            log.info("delivery.idle", reason=reason)
            self.role = "idle"
            await stop.wait()
            return
        js = self.store.js
        self._kv = await records.bucket(js, self.replicas)
        self._state_kv = await js.key_value(subjects.STATE_BUCKET)
        lease = Lease(await js.key_value(subjects.LEASE_BUCKET), "delivery", self.instance_id, ttl=self.lease_ttl)
        self.checkpoint = await self._read_checkpoint()
        start = await self.snapshots.restore(self.checkpoint)
        log.info("delivery.started", checkpoint=self.checkpoint, from_seq=start + 1, endpoints=sorted(self.endpoints))
        tail = await self.store.tail(subjects.EVENTS_ALL, start + 1)
        watcher: asyncio.Task[None] | None = None
        saved = self.checkpoint
        next_lease_check = 0.0
        backoff = self.lease_ttl / 4
        log_end = LogEndWatch(self.store, "delivery")
        try:
            while not stop.is_set():
                # Renew well inside the lease: a late renewal lets a standby take over while
                # this instance still delivers, and a notice would go out twice.
                await tail.wait(timeout=min(0.5, self.lease_ttl / 4))
                batch = tail.drain()
                if self.facts.unread:
                    await self.snapshots.read_unread(batch)
                for stored in batch:
                    self._fold(stored)
                await log_end.check(self.facts.state.last_seq)
                now = asyncio.get_running_loop().time()
                try:
                    if now >= next_lease_check:
                        next_lease_check = now + self.lease_ttl / 4
                        await (lease.renew() if lease.held else lease.try_acquire())
                        if lease.unavailable:  # NATS is away: not held as far as we know
                            next_lease_check = now + backoff
                            backoff = min(backoff * 2, 5.0)
                        else:
                            backoff = self.lease_ttl / 4
                        if lease.held and watcher is None:
                            log.info("delivery.leading", instance=self.instance_id)
                            self.checkpoint = saved = max(self.checkpoint, await self._read_checkpoint())
                            watcher = asyncio.create_task(self._watch(), name="delivery-watch")
                        elif not lease.held:
                            await self._stand_down(watcher)
                            watcher = None
                            if not lease.unavailable:
                                # A standby keeps only what the active instance has not done yet.
                                self.checkpoint = saved = max(self.checkpoint, await self._read_checkpoint())
                                self._drop_done()
                        self.role = "leader" if lease.held else "standby"
                        LEADER.labels("delivery", self.instance_id).set(1 if lease.held else 0)
                    if lease.held:
                        await self._notify_pending()
                        if self.checkpoint > saved:
                            await self._state_kv.put(CHECKPOINT_KEY, str(self.checkpoint).encode())
                            saved = self.checkpoint
                        if self.snapshots.due(saved, len(self._pending)):
                            self.snapshots.save_soon()
                except NATS_ERRORS as err:
                    # A blip, not the end: stand down (the active instance's work is unknown)
                    # and take the lease again from the saved checkpoint once NATS answers.
                    log.warning("delivery.nats_unavailable", instance=self.instance_id, error=repr(err))
                    lease.forget()
                    self.role = "standby"
                    LEADER.labels("delivery", self.instance_id).set(0)
                    await self._stand_down(watcher)
                    watcher = None
                    next_lease_check = asyncio.get_running_loop().time() + backoff
                    backoff = min(backoff * 2, 5.0)
        finally:
            # Each step in its own ``finally``: a stop cancelled part way (``up`` cancels a
            # service still stopping after its grace) still closes the HTTP session and hands
            # the lease back, instead of leaving the next instance to wait out its TTL.
            try:
                await cancel_and_wait(watcher)
                with contextlib.suppress(*NATS_UNAVAILABLE):
                    await tail.close()
                await self.snapshots.finish()
                await self._finish_in_flight(lease)
            finally:
                try:
                    await cancel_all_and_wait(list(self._tasks))
                finally:
                    await self.senders.close()
                    if lease.held:
                        with skipping("delivery.lease_release"):
                            await lease.release()
                    with contextlib.suppress(KeyError):
                        LEADER.remove("delivery", self.instance_id)
                    log.info("delivery.stopped", checkpoint=self.checkpoint)

    async def _finish_in_flight(self, lease: Lease) -> None:
        """On a stop, let deliveries in flight record their outcome (for up to
        ``STOP_GRACE_SECONDS``, holding the lease meanwhile): a delivery cancelled between its
        successful send and its record would be sent again by the next active instance. What is
        still running then (a retry waiting out its backoff) is cancelled; its record says where
        it stopped, and the next active instance resumes it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_SECONDS
        while self._tasks and lease.held and loop.time() < deadline:
            # One waiting out a backoff has nothing in flight: its record says when to go on.
            for task in self.rounds.backing_off & self._tasks:
                task.cancel()
            await asyncio.wait(set(self._tasks), timeout=min(self.lease_ttl / 4, deadline - loop.time()))
            await lease.renew()  # False (lost, or NATS away) ends the wait: someone else may act now
        if self._tasks:
            log.info("delivery.stop_cancels", in_flight=len(self._tasks), instance=self.instance_id)

    async def _stand_down(self, watcher: asyncio.Task[None] | None) -> None:
        """Stop acting as the active instance: no new records, no watcher (waited for: a
        watcher that swallowed the cancel would go on delivering beside the new leader)."""
        if watcher is not None:
            log.warning("delivery.standing_down", instance=self.instance_id)
            await cancel_and_wait(watcher)

    async def _read_checkpoint(self) -> int:
        assert self._state_kv is not None
        try:
            entry = await self._state_kv.get(CHECKPOINT_KEY)
        except KeyNotFoundError:
            return 0
        return int((entry.value or b"0").decode())

    # -- folding ---------------------------------------------------------------------------

    def _fold(self, stored: StoredEvent) -> None:
        self.snapshots.since += 1
        if stored.trace is not None:
            self._traces[stored.seq] = stored.trace
            if len(self._traces) > TRACES_KEPT:
                self._traces.popitem(last=False)
        try:
            notices = self.facts.apply(stored)
        except Exception as err:  # quarantined (logged once, counted, parked): no notices from it
            self.store.cannot_apply(stored, err)
            # Its sequence counts: a restart from a snapshot after it does not meet it again.
            self.facts.state.last_seq = max(self.facts.state.last_seq, stored.seq)
            notices = []
        if stored.seq <= self.checkpoint:
            return
        at = getattr(stored.event, "at", None)
        age = self.clock() - at if at is not None else timedelta(0)
        fresh = age <= timedelta(seconds=self.settings.max_age_seconds)
        notices = notices if fresh else []
        # However late: a receiver still holds what it was told of the customer.
        if (erased := erasure.notice(stored)) is not None:
            notices.append(erased)
        self._pending.append((stored.seq, notices, age > LATE_AFTER))

    def _drop_done(self) -> None:
        while self._pending and self._pending[0][0] <= self.checkpoint:
            self._pending.popleft()

    async def _notify_pending(self) -> None:
        self._drop_done()
        while self._pending:
            seq, notices, late = self._pending[0]
            for notice in notices:
                if late and moot(self.facts.state, notice):
                    continue
                if notice.kind == erasure.NOTICE:
                    await erasure.with_conversations(self.store.js, notice)
                    targets = erasure.endpoints(self.endpoints)
                else:
                    targets = endpoints_for(self.endpoints, self.settings.teams, notice.agent_id, notice.kind)
                for eid, endpoint in targets:
                    await self._create(notice, eid, endpoint)
            self._pending.popleft()
            self.checkpoint = seq

    async def _create(self, notice: Notice, eid: str, endpoint: Endpoint) -> None:
        assert self._kv is not None
        now = self.clock()
        record = DeliveryRecord(
            id=records.record_id(notice.seq, eid, notice.agent_id),
            endpoint_id=eid,
            kind=endpoint.kind,
            agent_id=notice.agent_id,
            notice=notice.kind,
            seq=notice.seq,
            conversation_id=notice.conversation_id,
            customer_id=notice.customer_id,
            created_at=now,
            updated_at=now,
            body=notice.body,
            trace=dict(self._traces.get(notice.seq) or {}),
        )
        if record.id in self._inflight:
            return
        # Claimed before it exists, so the watcher (which sees the creation) leaves it alone.
        self._inflight.add(record.id)
        try:
            self._wrote(record.id, await self._kv.create(record.id, records.encode(record)))
        except KeyWrongLastSequenceError:
            # Made before a restart; the watcher resumes it if it is still pending.
            self._inflight.discard(record.id)
            return
        except BaseException:
            self._inflight.discard(record.id)
            raise
        self._spawn(record, claimed=True)

    def _spawn(self, record: DeliveryRecord, *, claimed: bool = False) -> None:
        if not claimed:
            if record.id in self._inflight:
                return
            self._inflight.add(record.id)
        task = asyncio.create_task(self._deliver(record), name=f"delivery {record.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        """Pick up retries an operator asked for, and deliveries a previous run left pending."""
        assert self._kv is not None
        watcher = await self._kv.watchall()
        try:
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                written = self._written.get(entry.key)
                if written is not None:
                    if entry.revision is not None and entry.revision < written:
                        continue  # a state this instance has written over since
                    del self._written[entry.key]
                try:
                    record = records.decode(entry.value)
                except Exception as err:  # a record this version cannot read: said, and left alone
                    log.warning(
                        "delivery.record_unreadable", key=entry.key, revision=entry.revision, error=repr(err)[:300]
                    )
                    continue
                if record.status == "retry_requested" or (
                    record.status == "pending" and record.id not in self._inflight
                ):
                    self._spawn(record)
        finally:
            with skipping("delivery.watcher_stop"):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _save(self, record: DeliveryRecord) -> None:
        assert self._kv is not None
        record.updated_at = self.clock()
        self._wrote(record.id, await self._kv.put(record.id, records.encode(record)))

    def _wrote(self, key: str, revision: int) -> None:
        self._written[key] = revision
        self._written.move_to_end(key)
        if len(self._written) > WRITES_KEPT:
            self._written.popitem(last=False)

    async def _deliver(self, record: DeliveryRecord) -> None:
        bound = log.bind(
            delivery_id=record.id,
            agent_id=record.agent_id,
            conversation_id=record.conversation_id,
            endpoint_id=record.endpoint_id,
            customer_id=record.customer_id,
        )
        # Tracing on: span ``delivery.notify`` continues the trace of the fact (the offer).
        attributes = {"relaydesk.endpoint_kind": record.kind, "relaydesk.notice": record.notice}
        trace = self._traces.get(record.seq) or record.trace or None  # the record's: resumed after a restart
        with tracing.span("delivery.notify", trace, new_trace=False, kind="client", attributes=attributes):
            try:
                await self.rounds.run(record, bound)
                erasure.counted(record, bound)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a bug must not stop the other deliveries
                bound.exception("delivery.crashed", error=repr(err))
            finally:
                self._inflight.discard(record.id)
