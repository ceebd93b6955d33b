"""``[retention] message_days``: message bodies older than N days become unreadable.

With retention on, message bodies (``MessageReceived.text``, ``ReplyRequested.text``) are
sealed with a key of the customer's for the event's day (``rd.keys.<customer>.d<yyyymmdd>``,
events.personal) instead of their own key. This sweep, run by the API process every hour,
erases the day keys older than N days (a secure erase in ``RD_KEYS``), so those bodies read
as ``[expired]`` everywhere, in the log and in every rebuild, while the rest of the event
(who, when, which channel, routing) stays. Readers configured with the setting show
``[expired]`` from the first day past retention even before the sweep ran.
"""

from __future__ import annotations

import asyncio
from datetime import date

import structlog
from nats.js import JetStreamContext

from events.personal import CustomerKeys
from events.personal.cipher import retention_cutoff

log = structlog.get_logger(__name__)

SWEEP_EVERY_S = 3600.0


async def sweep(js: JetStreamContext, message_days: int, today: date | None = None) -> int:
    """Erase the day keys past retention once; returns how many were erased."""
    if message_days <= 0:
        return 0
    return await CustomerKeys(js).expire_days(retention_cutoff(message_days, today))


async def run_retention(js: JetStreamContext, message_days: int, stop: asyncio.Event) -> None:
    """Sweep now and then every ``SWEEP_EVERY_S`` until ``stop``; a failed sweep is tried at the next."""
    while not stop.is_set():
        try:
            erased = await sweep(js, message_days)
            log.info("retention.swept", message_days=message_days, day_keys_erased=erased)
        except Exception as err:  # NATS away: the next sweep tries again
            log.warning("retention.sweep_failed", error=repr(err), skipped="this sweep")
        try:
            await asyncio.wait_for(stop.wait(), SWEEP_EVERY_S)
        except TimeoutError:
            continue
