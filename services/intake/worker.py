"""Intake on a raw JetStream pull consumer (``events.pull``), many messages in flight, no
thread hop per message.

Each fetched message becomes a task at once (in delivery order, so a sender's messages take
their sender's lock in that order: ``Intake.handle_message``); the tasks record and settle
(``services.intake.settling.settle``: ack, bounded redelivery, dead letters), and the loop
fetches again as soon as there is room under ``in_flight``, where a sender's held messages take
one slot however many there are (``services.intake.shares``: a flood from one sender leaves
room for everyone else), up to ``max_held`` messages (and ``MAX_HELD_BYTES``) in all. Several intake processes share
the durable ``intake``: different customers in parallel, and one sender's messages in the
order they were published (``services.intake.ordering``).

The durable's ack wait is short (``[intake] ack_wait_seconds``, 5 s): what a dead intake held
goes to another within seconds. A plan that takes longer (waiting for a sender's earlier
message, conflict retries, a slow NATS) is kept from being handed out meanwhile by
in-progress acks (``+WPI``) every third of the ack wait, for at most ``IN_PROGRESS_LIMIT_S``:
a plan stuck longer is let go to be redelivered (and parked after ``max_deliver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

import structlog
from msgspec import DecodeError, ValidationError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter

from connectors.sdk.deadletter import Redelivery
from events import subjects
from events.direct import DirectBatches
from events.model import InboundMessage, InboundRecord
from events.parking import ParkingLot
from events.pull import Puller, held_since
from events.skips import count_skip
from events.stopping import cancel_all_and_wait
from services.bus.errors import NATS_ERRORS
from services.intake.consumer import Intake
from services.intake.lag import export_forever
from services.intake.ordering import OrderingWindow
from services.intake.settling import DURABLE, decode_record, redelivery_for, settle
from services.intake.shares import MAX_HELD_BYTES, SenderShares, held_limit, sender_of
from services.intake.storage_wait import FIRST_PAUSE_S, StorageWait

log = structlog.get_logger(__name__)

Decoded = InboundRecord | DecodeError | ValidationError

# How long one delivery is kept alive with in-progress acks before it is let go.
IN_PROGRESS_LIMIT_S = 120.0
IN_PROGRESS_ACKS = Counter(
    "relaydesk_intake_in_progress_acks_total",
    "In-progress acks (+WPI) intake sent for plans taking longer than a third of the ack wait, by outcome",
    ["outcome"],
)


class IntakeWorker:
    """Runs ``intake`` on the durable ``intake`` until ``stop`` is set."""

    def __init__(
        self,
        nc: NATS,
        intake: Intake,
        *,
        batch: int = 128,
        in_flight: int = 512,
        max_held: int | None = None,
        redelivery: Redelivery | None = None,
        lag_every: float = 5.0,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.intake = intake
        self.batch = batch
        # Slots: a sender holding messages takes one however many (services.intake.shares).
        self.in_flight = in_flight
        # Messages held at most (queued behind their sender's included): under the durable's
        # max_ack_pending, past which the server hands out nothing (read at the start when not
        # given), and MAX_HELD_BYTES of them.
        self.max_held = max_held
        self.held_bytes = 0
        self._sizes: dict[asyncio.Task[None], int] = {}
        self.shares = SenderShares()
        self._senders: dict[asyncio.Task[None], str] = {}  # in flight -> its sender's slot
        # The configured ack wait (``[intake] ack_wait_seconds``) unless a test names another.
        self.redelivery = redelivery or redelivery_for(intake.settings)
        self.lag_every = lag_every
        self.lot = ParkingLot(self.js)
        self.window = OrderingWindow(self.js, DirectBatches(nc, 5.0), intake)
        self._tasks: dict[asyncio.Task[None], int] = {}  # in flight → its stream sequence
        self._deliveries: dict[asyncio.Task[None], tuple[Msg, float]] = {}  # in flight → (message, taken at)
        self._room = asyncio.Event()
        self._room.set()
        # Deliveries held while JetStream's storage is full: nothing new is fetched meanwhile.
        self.storage = StorageWait()

    async def run(self, stop: asyncio.Event) -> None:
        # Fetches are answered on the connection's own inbox prefix (``_INBOX_intake`` under
        # the role's NATS user), as soon as there is a message: several processes share the
        # durable, and nats-py's fetch would hold a part batch up to its timeout (events.pull).
        sub = await Puller(self.nc, subjects.INBOUND_STREAM, DURABLE).start()
        if self.max_held is None:
            info = await self.js.consumer_info(subjects.INBOUND_STREAM, DURABLE)
            self.max_held = max(self.in_flight, held_limit(int(info.config.max_ack_pending or -1)))
        await self.intake.warm_up()
        # What is alive now (modules, the language model, phone metadata: ~90,000 objects,
        # ~20 ms a full collection) lives as long as the process: out of the collector's
        # sight, a full collection in the middle of a burst no longer walks it.
        gc.freeze()
        lag = asyncio.create_task(export_forever(self.js, stop, self.lag_every))
        alive = asyncio.create_task(self._keep_alive())
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if self.storage.blocked:  # fetched now, a message would only spend its deliveries
                    await asyncio.wait([stopping], timeout=FIRST_PAUSE_S)
                    continue
                room = min(self.in_flight - self.shares.active, (self.max_held or 0) - len(self._tasks))
                if self.held_bytes >= MAX_HELD_BYTES:
                    room = 0
                if room <= 0:
                    self._room.clear()
                    waiter = asyncio.create_task(self._room.wait())
                    await asyncio.wait([waiter, stopping], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                try:
                    msgs = await sub.fetch(min(self.batch, room), 1.0)
                except Exception as err:  # NATS away: the client reconnects; fetch again after a pause
                    log.warning("intake.fetch_failed", error=repr(err))
                    count_skip("intake.fetch")
                    await asyncio.sleep(0.5)
                    continue
                if msgs:
                    await self._dispatch(msgs)
        finally:
            stopping.cancel()
            self.storage.stopping.set()  # a delivery waiting for storage is handed back
            if self._tasks:  # let what is in flight finish (acked or handed back)
                await asyncio.wait(list(self._tasks), timeout=10.0)
            await cancel_all_and_wait((lag, alive))
            with contextlib.suppress(*NATS_ERRORS):  # closing connection: nothing to undo on the server
                await sub.unsubscribe()
            gc.unfreeze()  # collectable again once this worker is gone (tests run many in one process)

    async def _dispatch(self, msgs: list[Msg]) -> None:
        decoded = [(msg, decode_record(msg.data)) for msg in msgs]
        own = [(msg.metadata.sequence.stream, rec) for msg, rec in decoded if isinstance(rec, InboundMessage)]
        try:
            earlier = await self.window.earlier(own, self.held())
        except Exception as err:  # recorded without the cross-process check rather than not at all
            log.warning("intake.ordering_window_unreadable", error=repr(err))
            count_skip("intake.ordering_window")
            earlier = {}
        every = self._renew_every()
        for msg, record in decoded:
            seq = msg.metadata.sequence.stream
            taken_at = self._start(msg, record, earlier.get(seq, ()))
            if time.monotonic() - taken_at >= every:
                # The reads above took a good part of the ack wait: renewed now, not at the
                # keep-alive's next turn, which could come after the ack wait ran out.
                await self._renew(msg)

    def held(self) -> set[int]:
        """Stream sequences this process holds (in flight)."""
        return set(self._tasks.values())

    def _start(self, msg: Msg, record: Decoded, earlier: tuple[tuple[str, str], ...]) -> float:
        """Start recording ``msg``; returns since when it is held (``time.monotonic``)."""
        settling = settle(
            self.intake, self.lot, msg, self.redelivery, record=record, earlier=earlier, storage=self.storage
        )
        task = asyncio.create_task(settling)
        self._tasks[task] = msg.metadata.sequence.stream
        sender = sender_of(record, self.intake.identity_of)
        self._senders[task] = sender
        self.shares.take(sender)
        self._sizes[task] = len(msg.data)
        self.held_bytes += len(msg.data)
        # Held since the server handed it over (no earlier than its request was sent), not since
        # now: the ordering window's reads, or a loop that was busy, ate into the ack wait, and
        # the first in-progress ack could come after it ran out (found by a flake hunt).
        taken_at = held_since(msg, time.monotonic())
        self._deliveries[task] = (msg, taken_at)
        task.add_done_callback(self._done)
        return taken_at

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._deliveries.pop(task, None)
        sender = self._senders.pop(task, None)
        if sender is not None:
            self.shares.give_back(sender)
        self.held_bytes -= self._sizes.pop(task, 0)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            # settle logged it (intake.settle_failed); the server redelivers after ack_wait
            log.debug("intake.task_failed", error=repr(task.exception()))

    async def _keep_alive(self) -> None:
        """Every third of the ack wait, an in-progress ack for each delivery in flight at least
        that long (younger ones are far from their ack wait): one loop, not a timer per message.
        Runs until cancelled, through the drain of what is in flight after ``stop``."""
        every = self._renew_every()
        while True:
            await asyncio.sleep(every)
            await self.still_working(time.monotonic() - every)

    def _renew_every(self) -> float:
        return max(0.1, self.redelivery.ack_wait / 3)

    async def still_working(self, taken_before: float) -> int:
        """``+WPI`` for the deliveries in flight taken before ``taken_before`` (monotonic) and
        not held beyond ``IN_PROGRESS_LIMIT_S``; returns how many were sent."""
        now, sent = time.monotonic(), 0
        for task, (msg, taken_at) in list(self._deliveries.items()):
            if taken_at > taken_before or task.done():
                continue
            # Stuck since it was taken, or since its sender's queue last moved (a message queued
            # behind its sender's flood waits its turn: not stuck while the queue moves).
            moved = self.intake.turns.moved_at(self._senders.get(task, ""))
            stuck_since = taken_at if moved is None else max(taken_at, moved)
            if now - stuck_since > IN_PROGRESS_LIMIT_S and msg.metadata.sequence.stream not in self.storage.held:
                # Stuck: let the server hand it out again (it counts towards max_deliver).
                self._deliveries.pop(task, None)
                IN_PROGRESS_ACKS.labels(outcome="let_go").inc()
                log.warning(
                    "intake.plan_stuck", stream_seq=msg.metadata.sequence.stream, held_s=round(now - taken_at, 1)
                )
                continue
            sent += await self._renew(msg)
        return sent

    async def _renew(self, msg: Msg) -> int:
        """``+WPI`` for ``msg``; 1 if sent."""
        try:
            await msg.in_progress()  # a publish: no round trip
        except Exception as err:  # NATS away: the delivery may be redelivered; the plan is idempotent
            IN_PROGRESS_ACKS.labels(outcome="failed").inc()
            log.warning("intake.in_progress_failed", stream_seq=msg.metadata.sequence.stream, error=repr(err))
            return 0
        IN_PROGRESS_ACKS.labels(outcome="sent").inc()
        return 1
