"""One round of attempts at a delivery record.

Up to ``max_attempts`` tries with exponential backoff and full jitter on 5xx, 408/429,
timeouts and connection errors (never sooner than a 429's or 503's ``Retry-After``, up to
``backoff_max``); a 4xx other than those, or the last failed try, dead-letters the record
(status ``failed``, reason kept); a record whose notice the log has answered meanwhile (an
offer accepted or expired) is not tried again (status ``superseded``). A concurrency slot is
held for one attempt only, not while backing off, and one endpoint gets at most
``endpoint_limit`` of them. The delivery service
(``services.delivery.service``) decides which records to deliver; ``Rounds`` delivers one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

import structlog

from connectors.sdk.deadletter import DEAD_LETTERS
from services.delivery import records
from services.delivery.endpoints import endpoint_limit
from services.delivery.records import Attempt, DeliveryRecord
from services.delivery.senders import Outcome, Senders
from services.delivery.settings import DeliverySettings, Endpoint
from services.metrics import DELIVERY_ATTEMPTS, DELIVERY_FAILURES


def backoff(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): full jitter."""
    return float(rng() * min(cap, base * 2.0 ** (attempt - 1)))


class Rounds:
    """Rounds of attempts at delivery records, through the pool's and each endpoint's gates;
    each record is saved (``save``) after every attempt that changes it."""

    def __init__(
        self,
        settings: DeliverySettings,
        endpoints: Mapping[str, Endpoint],
        senders: Senders,
        *,
        clock: Callable[[], datetime],
        save: Callable[[DeliveryRecord], Awaitable[None]],
        superseded: Callable[[DeliveryRecord], str | None] = lambda _record: None,
    ) -> None:
        self.settings = settings
        # Why a record's notice no longer stands (None: it does), asked before every try but a
        # fresh record's first: an offer retried through an endpoint's outage went out long
        # after it was accepted or had expired (found by an outage audit).
        self.superseded = superseded
        self.endpoints = endpoints
        self.senders = senders
        self.clock = clock
        self._save = save
        # Attempts in flight at once (``concurrency``), and per endpoint (``endpoint_limit``):
        # a slot is held for one attempt only, never while backing off or waiting out a
        # Retry-After, and one slow or broken endpoint cannot take the whole pool (the other
        # agents' notices would wait behind it, offers past their expiry).
        self._gate = asyncio.Semaphore(max(1, settings.concurrency))
        self.endpoint_limit = endpoint_limit(settings)
        self._endpoint_gates: dict[str, asyncio.Semaphore] = {}
        # Deliveries waiting out a backoff or a Retry-After, their record saved with the time of
        # the next attempt: a stop cancels them at once instead of waiting for them.
        self.backing_off: set[asyncio.Task[object]] = set()

    async def _attempt(self, endpoint: Endpoint, record: DeliveryRecord) -> Outcome:
        """One attempt, holding a slot of its endpoint and then one of the pool: a delivery
        waiting for its endpoint's turn holds none of the pool."""
        gate = self._endpoint_gates.get(record.endpoint_id)
        if gate is None:
            gate = self._endpoint_gates[record.endpoint_id] = asyncio.Semaphore(self.endpoint_limit)
        async with gate, self._gate:
            return await self.senders.send(endpoint, record.id, record.body, record.endpoint_id)

    async def _back_off(self, delay: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.backing_off.add(task)
        try:
            await asyncio.sleep(delay)
        finally:
            self.backing_off.discard(task)

    async def run(self, record: DeliveryRecord, bound: structlog.typing.FilteringBoundLogger) -> None:
        endpoint = self.endpoints.get(record.endpoint_id)
        if record.status == "retry_requested":
            record.rounds += 1
        record.status = "pending"
        record.next_attempt_at = None
        if endpoint is None:
            record.status, record.reason = "failed", f"endpoint {record.endpoint_id} is no longer configured"
            await self._save(record)
            DELIVERY_FAILURES.labels(kind="gone").inc()
            bound.warning("delivery.failed", reason=record.reason)
            return
        # A pending record resumed after a restart continues its round where it stopped.
        done = sum(1 for a in record.attempts if a.round == record.rounds)
        outcome: Outcome | None = None
        for n in range(done + 1, self.settings.max_attempts + 1):
            if record.attempts and (why := self.superseded(record)) is not None:
                record.status, record.reason, record.next_attempt_at = "superseded", why, None
                await self._save(record)
                bound.info("delivery.superseded", reason=why, attempts=len(record.attempts))
                return
            outcome = await self._attempt(endpoint, record)
            record.attempts.append(
                Attempt(
                    round=record.rounds,
                    n=n,
                    at=self.clock(),
                    ok=outcome.ok,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    ms=outcome.ms,
                )
            )
            DELIVERY_ATTEMPTS.labels(kind=endpoint.kind, result="ok" if outcome.ok else "failed").inc()
            if outcome.ok:
                record.status, record.reason, record.next_attempt_at = "delivered", "", None
                await self._save(record)
                # Once per notice: at debug (the record and relaydesk_delivery_attempts_total keep it).
                bound.debug("delivery.delivered", attempt=n, round=record.rounds, kind=record.kind)
                return
            bound.info("delivery.attempt_failed", attempt=n, status_code=outcome.status_code, error=outcome.error)
            if not outcome.retryable or n == self.settings.max_attempts:
                break
            delay = backoff(n, self.settings.backoff_base, self.settings.backoff_max)
            if outcome.retry_after is not None:  # never sooner than the receiver asked (up to the cap)
                delay = max(delay, min(outcome.retry_after, self.settings.backoff_max))
            record.next_attempt_at = self.clock() + timedelta(seconds=delay)
            await self._save(record)
            await self._back_off(delay)
        record.status = "failed"
        record.next_attempt_at = None
        last = outcome.error if outcome is not None else "no attempt made"
        tries = sum(1 for a in record.attempts if a.round == record.rounds)
        record.reason = f"{last} (after {tries} attempt{'s' if tries != 1 else ''})"
        await self._save(record)
        DEAD_LETTERS.labels(reader="delivery", stream=records.BUCKET).inc()
        DELIVERY_FAILURES.labels(kind=endpoint.kind).inc()
        bound.warning("delivery.dead_lettered", reason=record.reason, round=record.rounds)
