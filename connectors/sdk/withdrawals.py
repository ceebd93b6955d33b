"""Replies taken back while a connector holds them.

Unlinking an address (``services.customers.unlink_replies``) and erasing a customer securely
delete the customer's queued ``DeliverReply`` commands from ``RD_OUTBOUND``. A connector that
had already fetched one kept it in memory, opened, and went on trying it: through a provider's
outage, minutes later, to an address that was no longer the customer's. The server tells the
consumer's listeners when a message it handed out is deleted before its ack (an advisory on
``$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.<stream>.<durable>``, reason "Unacknowledged
message was deleted"); every process of the channel listens, and the outbound worker asks before
each try (``Tries``) whether the command it holds was withdrawn. One that was is not tried again:
it is reported failed with ``WITHDRAWN_REASON`` (the unlink recorded its own failure first; an
outcome per reply is kept, so this one is dropped there).

A try already under way when the advisory comes still reaches the provider. A role without
the right to the advisory subject (an ``auth.conf`` older than this) hears nothing and tries as
before.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events import subjects
from events.skips import count_skip, skipping

log = structlog.get_logger("relaydesk.connector.withdrawals")

WITHDRAWN_REASON = "the reply was taken back before it was sent (its address was unlinked or its customer erased)"
KEEP = 10_000  # withdrawn sequences remembered: far more than a worker holds at once


class Withdrawals:
    """The stream sequences of ``durable``'s commands deleted while handed out."""

    def __init__(self, nc: NATS, stream: str, durable: str) -> None:
        self.nc = nc
        self.subject = subjects.terminated_advisory(stream, durable)
        self._seqs: OrderedDict[int, None] = OrderedDict()
        self._sub: Subscription | None = None

    def withdrawn(self, msg: Msg) -> bool:
        return msg.metadata.sequence.stream in self._seqs

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self.nc.subscribe(self.subject, cb=self._on_advisory)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with skipping("withdrawals.unsubscribe", nats_subject=self.subject):  # closing, or gone
                await sub.unsubscribe()

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            seq, reason = int(advisory["stream_seq"]), str(advisory.get("reason", ""))
        except (ValueError, KeyError, TypeError) as err:
            log.warning("withdrawals.advisory_unreadable", nats_subject=msg.subject, error=repr(err))
            count_skip("withdrawals.advisory")
            return
        # Terminations this worker makes itself (a dead letter) carry their own reasons.
        if "deleted" not in reason.lower():
            return
        self._seqs[seq] = None
        while len(self._seqs) > KEEP:
            self._seqs.popitem(last=False)
        log.info("outbound.command_withdrawn", nats_subject=msg.subject, stream_seq=seq)
