"""Intake on a raw JetStream pull consumer: ``fetch(batch)``, many messages in flight, no
thread hop per message.

Each fetched message becomes a task at once (in delivery order, so a sender's messages take
their sender's lock in that order: ``Intake.handle_message``); the tasks record and settle
(``services.intake.consumer.settle``: ack, bounded redelivery, dead letters), and the loop
fetches again as soon as there is room under ``in_flight``. Several intake processes share
the durable ``intake``: different customers in parallel, and one sender's messages in the
order they were published (``services.intake.ordering``).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from msgspec import DecodeError, ValidationError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from connectors.sdk.deadletter import Redelivery
from events import subjects
from events.direct import DirectBatches
from events.model import InboundMessage, InboundRecord
from events.parking import ParkingLot
from services.intake.consumer import DURABLE, REDELIVERY, Intake, decode_record, settle
from services.intake.lag import export_forever
from services.intake.ordering import OrderingWindow

log = structlog.get_logger(__name__)

Decoded = InboundRecord | DecodeError | ValidationError


class IntakeWorker:
    """Runs ``intake`` on the durable ``intake`` until ``stop`` is set."""

    def __init__(
        self,
        nc: NATS,
        intake: Intake,
        *,
        batch: int = 128,
        in_flight: int = 512,
        redelivery: Redelivery = REDELIVERY,
        lag_every: float = 5.0,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.intake = intake
        self.batch = batch
        self.in_flight = in_flight
        self.redelivery = redelivery
        self.lag_every = lag_every
        self.lot = ParkingLot(self.js)
        self.window = OrderingWindow(self.js, DirectBatches(nc, 5.0), intake)
        self._tasks: dict[asyncio.Task[None], int] = {}  # in flight → its stream sequence
        self._room = asyncio.Event()
        self._room.set()

    async def run(self, stop: asyncio.Event) -> None:
        # Fetches are answered on the connection's own inbox prefix (``_INBOX_intake`` under
        # the role's NATS user).
        sub = await self.js.pull_subscribe_bind(durable=DURABLE, stream=subjects.INBOUND_STREAM)
        lag = asyncio.create_task(export_forever(self.js, stop, self.lag_every))
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                room = self.in_flight - len(self._tasks)
                if room <= 0:
                    self._room.clear()
                    waiter = asyncio.create_task(self._room.wait())
                    await asyncio.wait([waiter, stopping], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                try:
                    msgs = await sub.fetch(min(self.batch, room), timeout=1.0)
                except (TimeoutError, NatsTimeoutError):
                    continue
                except Exception as err:  # NATS away: the client reconnects; fetch again after a pause
                    log.warning("intake.fetch_failed", error=repr(err))
                    await asyncio.sleep(0.5)
                    continue
                await self._dispatch(msgs)
        finally:
            stopping.cancel()
            if self._tasks:  # let what is in flight finish (acked or handed back)
                await asyncio.wait(list(self._tasks), timeout=10.0)
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            with contextlib.suppress(Exception):  # closing connection: nothing to undo on the server
                await sub.unsubscribe()

    async def _dispatch(self, msgs: list[Msg]) -> None:
        decoded = [(msg, decode_record(msg.data)) for msg in msgs]
        own = [(msg.metadata.sequence.stream, rec) for msg, rec in decoded if isinstance(rec, InboundMessage)]
        try:
            earlier = await self.window.earlier(own, self.held())
        except Exception as err:  # recorded without the cross-process check rather than not at all
            log.warning("intake.ordering_window_unreadable", error=repr(err))
            earlier = {}
        for msg, record in decoded:
            seq = msg.metadata.sequence.stream
            self._start(msg, record, earlier.get(seq, ()))

    def held(self) -> set[int]:
        """Stream sequences this process holds (in flight)."""
        return set(self._tasks.values())

    def _start(self, msg: Msg, record: Decoded, earlier: tuple[tuple[str, str], ...]) -> None:
        task = asyncio.create_task(settle(self.intake, self.lot, msg, self.redelivery, record=record, earlier=earlier))
        self._tasks[task] = msg.metadata.sequence.stream
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            # settle logged it (intake.settle_failed); the server redelivers after ack_wait
            log.debug("intake.task_failed", error=repr(task.exception()))
