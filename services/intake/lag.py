"""Intake lag: how many inbound messages wait on the ``intake`` consumer, and how old the
oldest unprocessed one is. Exported as Prometheus gauges by every intake process and by the API
(which shows it in its ``/readyz`` detail), from their first reading on, and by no other process
(``services.metrics.measured``); both read the consumer's info, nothing is stored."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from events import subjects
from events.skips import count_skip
from services.metrics import INTAKE_OLDEST_AGE as OLDEST_AGE
from services.metrics import INTAKE_PENDING as PENDING
from services.metrics import MEASURED_AT, measured

log = structlog.get_logger(__name__)

DURABLE = subjects.INTAKE_DURABLE

__all__ = ["DURABLE", "OLDEST_AGE", "PENDING", "Lag", "export", "export_forever", "read_lag"]


@dataclass(frozen=True)
class Lag:
    pending: int  # not delivered yet
    in_flight: int  # delivered, not acked yet
    oldest_age_s: float  # the oldest message not acked yet; 0.0 when nothing waits
    ack_floor: int  # the stream sequence every message up to which is acked

    @property
    def unprocessed(self) -> int:
        return self.pending + self.in_flight

    def detail(self) -> dict[str, float | int]:
        return {**asdict(self), "unprocessed": self.unprocessed}


async def read_lag(js: JetStreamContext, *, now: datetime | None = None) -> Lag:
    """The ``intake`` consumer's lag: two requests (consumer info; the oldest unacked message)."""
    info = await js.consumer_info(subjects.INBOUND_STREAM, DURABLE)
    floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
    pending, in_flight = int(info.num_pending or 0), int(info.num_ack_pending or 0)
    age = 0.0
    if pending + in_flight:
        try:
            oldest = await js.get_msg(subjects.INBOUND_STREAM, seq=floor + 1, subject=subjects.INBOUND_ALL, next=True)
        except NotFoundError:
            oldest = None
        if oldest is not None and oldest.time is not None:
            stamp = oldest.time if oldest.time.tzinfo else oldest.time.replace(tzinfo=UTC)
            age = max(0.0, ((now or datetime.now(UTC)) - stamp).total_seconds())
    return Lag(pending=pending, in_flight=in_flight, oldest_age_s=round(age, 3), ack_floor=floor)


def export(lag: Lag) -> None:
    """Set the gauges: this process measures intake's lag, so it exports them from now on."""
    measured(PENDING).set(lag.unprocessed)
    measured(OLDEST_AGE).set(lag.oldest_age_s)
    MEASURED_AT.labels(what="intake_lag").set_to_current_time()


async def export_forever(js: JetStreamContext, stop: asyncio.Event, every: float = 5.0) -> None:
    """Refresh the gauges every ``every`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            export(await read_lag(js))
        except Exception as err:  # NATS away or the consumer not there yet: the gauges keep their last value
            # (relaydesk_measured_timestamp_seconds{what="intake_lag"} says how old it is)
            log.warning("intake.lag_unreadable", error=repr(err))
            count_skip("intake.lag_reading")
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            continue
