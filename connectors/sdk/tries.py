"""The tries of one reply: ``Connector.deliver`` again after a transient failure, with the
pause between tries doubling (and jitter), never sooner than the provider's ``Retry-After``,
while the command and the batch's waiting ones stay held (``connectors.sdk.hold``)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from nats.aio.msg import Msg

from events.model import DeliverReply
from events.redact import scrub
from events.skips import count_skip

from .base import Connector, ConnectorSettings, DeliveryResult
from .errors import PermanentDeliveryError, TransientDeliveryError
from .hold import Hold, HoldLapsed
from .metrics import Metrics


class Withdrawn(Exception):
    """The command held was deleted from its stream meanwhile (``connectors.sdk.withdrawals``):
    no further try goes out."""


class HandBack(Exception):
    """The worker is stopping while a reply waits for its next try: it is handed back (nak)
    for the next process of the channel, not reported failed with tries left unused."""


def pause_before_retry(settings: ConnectorSettings, attempt: int, retry_after: float | None, jitter: float) -> float:
    """Seconds to wait after try ``attempt`` failed: ``deliver_backoff`` doubled per try up to
    ``deliver_backoff_max``, times 0.5..1 (``jitter`` in [0, 1): processes retrying after one
    outage do not come back together); never sooner than the provider's ``retry_after`` asked,
    up to ``deliver_retry_after_max``."""
    delay = min(settings.deliver_backoff * 2.0 ** min(attempt - 1, 32), settings.deliver_backoff_max)
    delay *= 0.5 + jitter / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.deliver_retry_after_max))
    return delay


class Tries:
    """Delivers one reply at a time for an ``OutboundWorker`` (``stop_requested``: set when the
    worker stops; ``waiting``: the batch and the index of its next command, whose holds are
    renewed during a long pause)."""

    def __init__(
        self,
        connector: Connector,
        hold: Hold,
        metrics: Metrics,
        stop_requested: asyncio.Event,
        log: Any,
        withdrawn: Callable[[Msg], bool] = lambda _msg: False,
    ) -> None:
        self.connector = connector
        self.withdrawn = withdrawn
        self.hold = hold
        self.metrics = metrics
        self.stop_requested = stop_requested
        self.log = log
        self.waiting: tuple[list[Msg], list[float], int] | None = None

    async def deliver(self, reply: DeliverReply, msg: Msg, rlog: Any) -> DeliveryResult:
        """The outcome of ``reply`` after up to ``deliver_attempts`` tries. Raises ``HoldLapsed``
        when the command may be another process's now, ``HandBack`` when the worker stops
        between two tries, ``Withdrawn`` when the command was deleted from its stream."""
        s = self.connector.settings
        attempts = max(1, s.deliver_attempts)
        result = DeliveryResult.failed("not attempted")
        for attempt in range(1, attempts + 1):
            if self.hold.lapsed():
                raise HoldLapsed
            await self.hold.renew(msg)
            if self.withdrawn(msg):
                raise Withdrawn
            result = await self._attempt(reply)
            if not result.ok and self.hold.lapsed():
                # Found by a chaos audit: a last try that outlived the hold (the process stopped
                # mid-try) reported the reply failed while the process NATS handed it to sent it.
                raise HoldLapsed
            if result.ok or not result.retryable:
                return result
            rlog.info(
                "outbound.transient_failure",
                attempt=attempt,
                reason=scrub(result.reason),
                retry_after=result.retry_after,
            )
            if attempt == attempts:
                break
            if self.stop_requested.is_set():
                raise HandBack  # tries are left: the next process makes them
            self.metrics.inc("delivery_retries")
            await self._pause(msg, pause_before_retry(s, attempt, result.retry_after, random.random()))
        return DeliveryResult.failed(f"{result.reason} (after {attempt} attempts)")

    async def _pause(self, msg: Msg, delay: float) -> None:
        """Wait ``delay`` seconds before the next try of ``msg``, renewing its hold and the
        batch's waiting commands' (a Retry-After may be longer than the ack wait: NATS would
        hand them to another process, which sends them too). Raises ``HandBack`` when the
        worker stops meanwhile."""
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self.withdrawn(msg):
                return  # the next try's check says so, now rather than after a long Retry-After
            # Renewed once a quarter of the ack wait old: at once after a long try (a try
            # may take most of the ack wait), then every quarter.
            renew_in = self.hold.since + self.hold.ack_wait / 4 - time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, min(left, renew_in))):
                    await self.stop_requested.wait()
            except TimeoutError:
                pass
            else:
                raise HandBack
            if deadline - time.monotonic() <= 0 or self.hold.lapsed():
                break  # lapsed (the process stalled): the next try's check leaves it
            await self.hold.renew(msg)
            if self.waiting is not None:
                await self.hold.keep(*self.waiting)

    async def _attempt(self, reply: DeliverReply) -> DeliveryResult:
        try:
            async with asyncio.timeout(self.connector.settings.deliver_timeout + 1.0):
                return await self.connector.deliver(reply)
        except TransientDeliveryError as err:
            return DeliveryResult.failed(err.reason, retryable=True, retry_after=err.retry_after)
        except PermanentDeliveryError as err:
            return DeliveryResult.failed(err.reason)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            # The exception text may carry the API URL (and a token in it): keep the type only.
            return DeliveryResult.failed(f"provider unreachable ({type(err).__name__})", retryable=True)
        except Exception as err:  # a bug in the connector: the reply fails with the reason, counted
            self.log.exception("outbound.deliver_crashed", reply_id=reply.reply_id)
            count_skip("outbound.deliver_crashed")
            return DeliveryResult.failed(f"connector error ({type(err).__name__})")
