"""A log that ends before what a running service has folded was restored or replaced under it.

Found by the upgrade audit: NATS put back from an older backup while the router, delivery and
the API kept running. Each went on from its own position: it held facts the log no longer has
(conversations, offers, agents) and read nothing new until the log passed that position again,
and the router decided on that view. Nothing said so. The API says it on ``/readyz``
(``services.api.health``); a router or delivery service stops with the reason
(``ServiceFailed``), so that its supervisor starts it again and it folds the log as it is (its
snapshot, "of another log", is ignored then).
"""

from __future__ import annotations

import time

import structlog

from events.store import EventStore
from services.bus.connection import ServiceFailed
from services.bus.errors import NATS_ERRORS

log = structlog.get_logger(__name__)

CHECK_EVERY_S = 5.0


class LogEndWatch:
    """Asks the log's end at most every ``every`` seconds (one stream info)."""

    def __init__(self, store: EventStore, service: str, every: float = CHECK_EVERY_S) -> None:
        self.store, self.service, self.every = store, service, every
        self._next = 0.0

    async def check(self, position: int) -> None:
        """Raise ``ServiceFailed`` when the log ends before ``position`` (the last event this
        service folded). NATS away or slow: nothing is known, nothing is said."""
        now = time.monotonic()
        if now < self._next or position <= 0:
            return
        self._next = now + self.every
        try:
            end = await self.store.last_seq()
        except NATS_ERRORS as err:
            log.debug("log_end.unknown", service=self.service, error=repr(err))
            return
        if end < position:
            log.error("log_end.before_position", service=self.service, position=position, log_end=end)
            raise ServiceFailed(
                f"{self.service}: the log ends at event {end}, before event {position}, which this "
                f"{self.service} has folded: it was restored or replaced under it; start the {self.service} "
                "again to fold the log as it is"
            )
