"""A reply's outcome, decided once and reported until it is on ``rd.inbound``: what the
outbound worker (``connectors.sdk.outbound``) tells intake after a try, and keeps in memory
while it cannot tell it, so a redelivered command is reported without being sent again."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from events.model import DeliverReply, ReplyOutcomeReported
from events.skips import count_skip
from events.storage_full import storage_full

from .base import DeliveryResult, utcnow
from .hold import Hold
from .publish import InboundPublisher

Outcome = ReplyOutcomeReported

# Outcomes kept for commands handed back unreported: beyond this, the oldest are forgotten
# (their redelivery would try the provider again).
REMEMBERED = 10_000


def outcome_of(reply: DeliverReply, result: DeliveryResult) -> Outcome:
    """What intake records for ``reply`` after a try that ended with ``result``."""
    return ReplyOutcomeReported(
        at=utcnow(),
        customer_id=reply.customer_id,
        conversation_id=reply.conversation_id,
        channel=reply.channel,
        reply_id=reply.reply_id,
        outcome="sent" if result.ok else "failed",
        provider_message_id=result.provider_message_id if result.ok else "",
        reason="" if result.ok else (result.reason or "delivery failed"),
    )


class OutcomeReports:
    """Outcomes decided and not yet reported (by reply id), and the reporting itself."""

    def __init__(self, nc: NATS, publisher: InboundPublisher, hold: Hold, stopping: Callable[[], bool]) -> None:
        self.nc = nc
        self.publisher = publisher
        self.hold = hold
        self._stopping = stopping
        self._decided: OrderedDict[str, Outcome] = OrderedDict()

    def decided(self, reply_id: str) -> Outcome | None:
        """The outcome already decided for ``reply_id``: its redelivery only reports it."""
        return self._decided.get(reply_id)

    def remember(self, reply_id: str, outcome: Outcome) -> None:
        self._decided[reply_id] = outcome
        while len(self._decided) > REMEMBERED:
            self._decided.popitem(last=False)

    async def report(
        self, outcome: Outcome, msg: Msg, rlog: Any, trace: Mapping[str, str], *, report_retry: float
    ) -> None:
        """Report ``outcome`` and acknowledge ``msg``, tried again in place while the command is
        still held here (NATS restarting, a publish timing out). Found by a chaos audit: the
        command was handed back at the first failure, and another process of the channel, not
        knowing it was sent, sent it again. Raises the last error once the hold may lapse.
        While JetStream's storage is full (``events.storage_full``) it is tried for as long as
        the hold is kept, not handed back: each hand-back spent a delivery, and after the last
        one parking failed too (it needs storage), so the outcome was never recorded."""
        pause = 0.2
        give_up_at = time.monotonic() + report_retry  # then handed back (settling.retry_or_park)
        while True:
            try:
                reported = await self.publisher.report(outcome, trace or None)
                rlog.debug("outbound.outcome_reported", seq=reported.seq, duplicate=reported.duplicate)
                await msg.ack()
                self._decided.pop(outcome.reply_id, None)
                return
            except Exception as err:
                waiting_for_room = storage_full(err) and not self._stopping() and not self.hold.lapsed()
                if not waiting_for_room and time.monotonic() + pause >= min(give_up_at, self.hold.ends()):
                    raise
                count_skip("outbound.report_retry")
                if not waiting_for_room:  # storage full: said once a minute by the publisher
                    rlog.warning(
                        "outbound.report_retrying",
                        error=type(err).__name__,
                        outcome=outcome.outcome,
                        stream_seq=msg.metadata.sequence.stream,
                    )
            await asyncio.sleep(pause)
            # Waiting for room, a pause up to a quarter of the hold, renewed after each.
            pause = min(pause * 2, self.hold.ack_wait / 4 if waiting_for_room else 2.0)
            if self.nc.is_connected and not self.hold.lapsed():
                await self.hold.renew(msg)
