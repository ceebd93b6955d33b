"""``[retention] message_days``: message bodies older than N days become unreadable.

With retention on, message bodies (``MessageReceived.text``, ``ReplyRequested.text``,
``NoteAdded.text``) are sealed with a key of the customer's for the event's day
(``rd.keys.<customer>.d<yyyymmdd>``, events.personal) instead of their own key. Two sweeps:

- the API process erases the day keys older than N days every hour (a secure erase in
  ``RD_KEYS``), so those bodies read as ``[expired]`` everywhere, in the log and in every
  rebuild, while the rest of the event (who, when, which channel, routing) stays. Readers
  configured with the setting show ``[expired]`` from the first day past retention even
  before the sweep ran.
- the API drops the parked records (``rd_parked``) parked before the cutoff, but those of
  ``RD_EVENTS`` (their bodies are sealed with day keys): a dead letter keeps the provider's raw
  message, a queued reply or a notice as it was, the customer's words in clear or sealed with
  their own key, and an unparseable mail's raw bytes in the attachments store (erased with it).
  They were kept for good.
- the projector rewrites the copies it made: the text of every timeline entry (message,
  reply, note) before the cutoff reads ``[expired]`` (``TimelineStore.expire_bodies``), once
  each time the cutoff moves (a UTC day), and again after a failure. Without it the timelines
  store kept every word for ever, and served it, though the log could no longer be read.

Each sweep is logged (``retention.swept``, ``retention.timelines_swept``) and counted
(``relaydesk_retention_sweeps_total{what, outcome}``, ``relaydesk_retention_expired_total{what}``);
a failed one is logged as a warning, counted as ``failed`` and tried again at the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, time

import structlog
from nats.js import JetStreamContext

from connectors.email.erasure import attachment_ref, erase_attachments
from connectors.email.unparsed import RAW_OBJECT_HEADER
from events import subjects
from events.parking import ParkingLot
from events.personal import CustomerKeys
from events.personal.cipher import retention_cutoff
from services.metrics import RETENTION_EXPIRED, RETENTION_SWEEPS
from services.timelines.store import TimelineStore

log = structlog.get_logger(__name__)

SWEEP_EVERY_S = 3600.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def cutoff_instant(message_days: int, today: date | None = None) -> datetime:
    """The first instant whose message bodies are kept: midnight UTC of ``retention_cutoff``
    (a day key is of a UTC day, so a body is kept through the whole of its day)."""
    return datetime.combine(retention_cutoff(message_days, today), time(0), tzinfo=UTC)


async def sweep(js: JetStreamContext, message_days: int, today: date | None = None) -> int:
    """Erase the day keys past retention once; returns how many were erased."""
    if message_days <= 0:
        return 0
    return await CustomerKeys(js).expire_days(retention_cutoff(message_days, today))


async def expire_parked(js: JetStreamContext, message_days: int, today: date | None = None) -> int:
    """Drop the parked records past retention that hold a message as it came (every stream's
    but the log's), and an unparseable mail's raw bytes with its record; returns how many."""
    if message_days <= 0:
        return 0
    cutoff = cutoff_instant(message_days, today)
    lot = ParkingLot(js)
    dropped = 0
    for record in await lot.list():
        if record.stream == subjects.EVENTS_STREAM or record.parked_at >= cutoff:
            continue
        raw = attachment_ref(record.headers.get(RAW_OBJECT_HEADER), None, "")
        if raw is not None:
            await erase_attachments(js, [raw])
        if await lot.drop(record.key):
            dropped += 1
            log.info("retention.parked_dropped", key=record.key, kind=record.kind, reader=record.reader)
    return dropped


async def expire_timelines(timelines: TimelineStore, message_days: int, today: date | None = None) -> int:
    """The timeline entries' texts past retention read ``[expired]``; returns how many changed."""
    if message_days <= 0:
        return 0
    return await timelines.expire_bodies(cutoff_instant(message_days, today))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return


async def run_retention(
    js: JetStreamContext,
    message_days: int,
    stop: asyncio.Event,
    *,
    clock: Callable[[], datetime] | None = None,
    every: float | None = None,
) -> None:
    """Sweep now and then every ``every`` seconds (``SWEEP_EVERY_S``) until ``stop``; a failed
    sweep is tried at the next. ``clock``: what "now" is (UTC; tests move it)."""
    while not stop.is_set():
        today = (clock or _utc_now)().date()
        for what, step in (("day_keys", sweep), ("parked", expire_parked)):
            try:
                done = await step(js, message_days, today)
            except Exception as err:  # NATS away: the next sweep tries again
                log.warning("retention.sweep_failed", what=what, error=repr(err), skipped="this sweep")
                RETENTION_SWEEPS.labels(what=what, outcome="failed").inc()
            else:
                log.info("retention.swept", what=what, message_days=message_days, expired=done)
                RETENTION_SWEEPS.labels(what=what, outcome="ok").inc()
                RETENTION_EXPIRED.labels(what=what).inc(done)
        await _wait(stop, every or SWEEP_EVERY_S)


async def run_timelines_retention(
    timelines: TimelineStore,
    message_days: int,
    stop: asyncio.Event,
    *,
    clock: Callable[[], datetime] | None = None,
    every: float | None = None,
) -> None:
    """The projector's sweep: at start, then whenever the cutoff has moved since the last
    sweep that succeeded (checked every ``every`` seconds, ``SWEEP_EVERY_S``), until ``stop``."""
    done_for: date | None = None
    while not stop.is_set():
        today = (clock or _utc_now)().date()
        cutoff = retention_cutoff(message_days, today)
        if cutoff != done_for:
            try:
                changed = await expire_timelines(timelines, message_days, today)
            except Exception as err:  # the database away or locked: the next check tries again
                log.warning("retention.sweep_failed", what="timelines", error=repr(err), skipped="this sweep")
                RETENTION_SWEEPS.labels(what="timelines", outcome="failed").inc()
            else:
                done_for = cutoff
                log.info(
                    "retention.timelines_swept",
                    message_days=message_days,
                    before=cutoff.isoformat(),
                    entries_expired=changed,
                )
                RETENTION_SWEEPS.labels(what="timelines", outcome="ok").inc()
                RETENTION_EXPIRED.labels(what="timelines").inc(changed)
        await _wait(stop, every or SWEEP_EVERY_S)
