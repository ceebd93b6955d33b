"""The outbound worker: deliver ``rd.out.<channel>`` commands and record the outcome.

A durable pull consumer on the ``RD_OUTBOUND`` work queue, filtered to the connector's
channel. For each ``DeliverReply`` it calls ``Connector.deliver`` (transient failures are
retried with exponential backoff and jitter, never sooner than the provider's ``Retry-After``;
the reply stays held meanwhile, and a worker stopping between tries hands it back instead of
failing it), publishes the outcome (``ReplyOutcomeReported``:
sent with the provider's message id, or failed with the reason) on ``rd.inbound.<channel>``
and acks once JetStream acknowledged it; intake records it on the log as ``MessageSent`` or
``DeliveryFailed``, once per reply (a connector never writes the log). A fresh fetch request
is issued every round and the subscription is rebuilt after errors or reconnects (nats.py
pull subscriptions may not resume after a server restart). An outcome that could not be
published is reported again in place while the command is held (a NATS restart), so no other
process gets the command and sends it again; past that it is kept in memory, the command is
handed back and its redelivery here publishes the outcome without sending again. A try that did
not send and ended after the hold may have lapsed reports nothing (another process has it).
(A connector killed between the provider's answer and the ack sends that reply again when the
command is redelivered: at least once, and intake still records one outcome.)
What a ``DeliverReply`` asks of a connector: ``connectors.sdk.reply_command``; what becomes of a
command neither sent nor reported (left, handed back, redelivered or parked): ``connectors.sdk.settling``;
of one deleted from the stream while held here (an unlink, an erasure): ``connectors.sdk.withdrawals``;
an outcome decided and reported until it is on ``rd.inbound``: ``connectors.sdk.reporting``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events import subjects
from events.codec import decode_reply
from events.errors import describe_error
from events.model import DeliverReply
from events.parking import ParkingLot
from events.personal import ERASED, CustomerKeys, PersonalDataCipher
from events.pull import LOST_AFTER_S, Puller, held_since
from events.redact import scrub
from events.skips import count_skip, skipping
from events.stopping import cancel_and_wait

from . import publish, settling
from .base import Connector, DeliveryResult
from .deadletter import MaxDeliveriesWatch, Redelivery, dead_letter, ensure_consumer
from .hold import Hold, HoldLapsed
from .metrics import Metrics
from .publish import InboundPublisher
from .reporting import OutcomeReports, outcome_of
from .tries import HandBack, Tries, Withdrawn
from .withdrawals import WITHDRAWN_REASON, Withdrawals

log = structlog.get_logger("relaydesk.connector.outbound")


# A command whose outcome cannot be reported is tried 6 times over about 7.5 minutes, then
# dead-lettered (terminated and parked in rd_parked); an undecodable one at once.
REDELIVERY = Redelivery(max_deliver=6, retry_delays=(2.0, 10.0, 30.0, 120.0, 300.0))


def durable_name(connector: Connector) -> str:
    return f"connector_{subjects.token(connector.name)}"


class OutboundWorker:
    def __init__(
        self, connector: Connector, nc: NATS, js: JetStreamContext, publisher: InboundPublisher, metrics: Metrics
    ):
        self.connector = connector
        self.nc = nc
        self.js = js
        self.publisher = publisher
        self.metrics = metrics
        self.subject = subjects.outbound(connector.channel)
        self.durable = durable_name(connector)
        self.reader = f"connector:{connector.name}"
        self.redelivery = REDELIVERY
        self.parking = ParkingLot(js)
        # Opens the personal fields of commands sealed by the API (never seals: sealing=False).
        self.cipher = PersonalDataCipher(CustomerKeys(js), sealing=False)
        self._watch: MaxDeliveriesWatch | None = None
        self.state = "idle"
        self.last_error = ""
        self._stopping = False
        self._idle = True
        self._task: asyncio.Task[None] | None = None
        # A command is never sent once its hold may have lapsed (connectors.sdk.hold).
        self.hold = Hold()
        self.reports = OutcomeReports(nc, publisher, self.hold, lambda: self._stopping)
        self._stop_requested = asyncio.Event()
        self.log = log.bind(connector=connector.name, channel=connector.channel)
        # The batch being handled and the index of its next command (``tries.waiting``): their
        # holds are renewed while a delivery waits out a long backoff or Retry-After.
        # Commands deleted from the stream while held here (an unlink, an erasure): not tried again.
        self.withdrawals = Withdrawals(nc, subjects.OUTBOUND_STREAM, self.durable)
        self.tries = Tries(
            connector, self.hold, metrics, self._stop_requested, self.log, withdrawn=self.withdrawals.withdrawn
        )

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._stop_requested.clear()
        self._task = asyncio.create_task(self._run(), name=f"outbound-{self.connector.name}")

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._stop_requested.set()  # a pause before a retry ends now: the reply is handed back
        task = self._task
        if task is None:
            return
        if self._idle:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
        except asyncio.CancelledError:
            pass
        await cancel_and_wait(task)
        self._task = None
        self.state = "stopped"

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "subject": self.subject}
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    # -- the fetch loop -----------------------------------------------------------------

    def _consumer_config(self) -> ConsumerConfig:
        s = self.connector.settings
        # Long enough for one try (`in_progress` renews the hold before each, and every quarter
        # of this during a pause between tries: ``_pause``), so a crashed process's reply goes
        # to another soon. And well beyond a fetch's wait: a hold counts from when the request
        # was sent (``events.pull.asked_at``), so a command handed over late in a long wait
        # would count as lapsed on arrival and be left, delivery after delivery, never sent.
        ack_wait = max(30.0, s.deliver_timeout * 2, 2 * (s.outbound_fetch_timeout + LOST_AFTER_S))
        # Bounded: max_deliver (the pause between tries is each nak's delay; see deadletter.py).
        bounded = dataclasses.replace(self.redelivery, ack_wait=ack_wait)
        self.hold.ack_wait = ack_wait
        return bounded.apply(
            ConsumerConfig(
                durable_name=self.durable,
                filter_subject=self.subject,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_ack_pending=1000,
            )
        )

    async def _subscribe(self) -> Puller:
        # A durable made by an older version (max_deliver -1) gets the bounded settings in place.
        await ensure_consumer(self.js, subjects.OUTBOUND_STREAM, self._consumer_config())
        if self._watch is None:
            self._watch = MaxDeliveriesWatch(self.nc, self.js, subjects.OUTBOUND_STREAM, self.durable, self.reader)
            await self._watch.start()
        await self.withdrawals.start()
        # Messages as soon as there are any: connector processes of a channel share the
        # durable, and nats-py's fetch would hold a part batch up to its timeout (events.pull).
        return await Puller(self.nc, subjects.OUTBOUND_STREAM, self.durable).start()

    async def _run(self) -> None:
        s = self.connector.settings
        sub: Puller | None = None
        reconnects = self.nc.stats.get("reconnects", 0)
        pause = 0.2
        while not self._stopping:
            try:
                if self.nc.stats.get("reconnects", 0) != reconnects:
                    reconnects = self.nc.stats.get("reconnects", 0)
                    await _drop(sub)
                    sub = None
                if sub is None:
                    self.state = "subscribing"
                    # A subscription made now is good for the reconnects already seen.
                    reconnects = self.nc.stats.get("reconnects", 0)
                    sub = await self._subscribe()
                    self.state = "running"
                    self.last_error = ""
                    self.log.info("outbound.subscribed", subject=self.subject, durable=self.durable)
                try:
                    self._idle = True
                    fetched_at = time.monotonic()
                    msgs = await sub.fetch(s.outbound_batch, s.outbound_fetch_timeout)
                finally:
                    self._idle = False
                # Each hold runs from when the server handed the command over: no earlier than
                # its request was sent (read late after a stall, it may have lapsed already).
                held = [held_since(msg, fetched_at) for msg in msgs]
                for i, msg in enumerate(msgs):
                    if self._stopping:
                        # Hand the rest back now rather than after ack_wait.
                        for rest in msgs[i:]:
                            with skipping("outbound.nak_on_stop", nats_subject=rest.subject):
                                await rest.nak()
                        break
                    await self.hold.keep(msgs, held, i)
                    self.hold.since = held[i]
                    self.tries.waiting = (msgs, held, i + 1)
                    try:
                        await self._handle(msg)
                    finally:
                        self.tries.waiting = None
                pause = 0.2
            except asyncio.CancelledError:
                break
            except Exception as err:
                self.state = "retrying"
                self.last_error = type(err).__name__
                self.log.warning("outbound.fetch_failed", error=type(err).__name__, detail=str(err)[:200])
                await _drop(sub)
                sub = None
                if self._stopping:
                    break
                if self.nc.is_closed:
                    # Closed for good (nats-py gave up reconnecting, or its owner closed it without
                    # stopping this worker): no fetch can succeed; a warning every 5 s forever helps
                    # nobody. The connector's /readyz says "stopped".
                    self.state = "stopped"
                    self.log.error("outbound.connection_closed", reason="the NATS connection is closed for good")
                    break
                self._idle = True
                try:
                    await asyncio.sleep(pause)
                except asyncio.CancelledError:
                    break
                finally:
                    self._idle = False
                pause = min(pause * 2, 5.0)
        await _drop(sub)
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
        await self.withdrawals.stop()

    # -- one command ----------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        try:
            reply = decode_reply(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            # It never will decode: parked at once (terminated, kept in rd_parked), not redelivered.
            self.log.error(
                "outbound.undecodable", error=describe_error(err)[:200], stream_seq=msg.metadata.sequence.stream
            )
            await dead_letter(self.parking, msg, reader=self.reader, error=describe_error(err))
            return
        rlog = self.log.bind(reply_id=reply.reply_id, conversation_id=reply.conversation_id)
        try:
            reply = await self.cipher.open_reply(reply)  # contact, text, metadata (events.personal)
        except Exception as err:  # the key store did not answer: the command comes back later
            rlog.warning(
                "outbound.open_failed",
                error=type(err).__name__,
                stream_seq=msg.metadata.sequence.stream,
                skipped="this delivery, for now",
            )
            count_skip("outbound.open_reply")
            error = f"the reply could not be opened: {describe_error(err)}"
            await settling.retry_or_park(
                msg, rlog, error, redelivery=self.redelivery, parking=self.parking, reader=self.reader
            )
            return
        tracer = publish.trace_outbound  # tracing on: a span around delivery and report
        with tracer(reply, msg.headers) if tracer is not None else nullcontext({}) as trace:
            if reply.notice:
                await self._notice(reply, msg, rlog)
                return
            await self._send_and_report(reply, msg, rlog, trace)

    async def _send_and_report(self, reply: DeliverReply, msg: Msg, rlog: Any, trace: Mapping[str, str]) -> None:
        outcome = self.reports.decided(reply.reply_id)
        if outcome is None:
            if ERASED in (reply.contact, reply.text):  # the customer was erased: nothing to send, nowhere
                result = DeliveryResult.failed("the customer's personal data was erased")
            else:
                try:
                    result = await self.tries.deliver(reply, msg, rlog)
                except HoldLapsed:
                    settling.hold_lapsed(msg, rlog)
                    return
                except HandBack:
                    await settling.hand_back(msg, rlog)
                    return
                except Withdrawn:
                    rlog.info("outbound.withdrawn", stream_seq=msg.metadata.sequence.stream)
                    result = DeliveryResult.failed(WITHDRAWN_REASON)
            outcome = outcome_of(reply, result)
            self.reports.remember(reply.reply_id, outcome)
            if outcome.outcome == "sent":
                self.metrics.inc("delivered")
                rlog.info("outbound.delivered", provider_message_id=outcome.provider_message_id)
            else:
                self.metrics.inc("delivery_failed")
                rlog.warning("outbound.failed", reason=scrub(outcome.reason))
        try:
            await self.reports.report(outcome, msg, rlog, trace, report_retry=self.redelivery.report_retry)
        except Exception as err:
            # The outcome is remembered: the redelivery reports it without sending again.
            rlog.warning("outbound.report_failed", error=type(err).__name__, stream_seq=msg.metadata.sequence.stream)
            count_skip("outbound.report_outcome")
            error = f"the outcome ({outcome.outcome}) could not be reported: {describe_error(err)}"
            await settling.retry_or_park(
                msg, rlog, error, redelivery=self.redelivery, parking=self.parking, reader=self.reader
            )

    async def _notice(self, reply: DeliverReply, msg: Msg, rlog: Any) -> None:
        """A notice is shown once if the connector can (its ``notices``), then acknowledged:
        no outcome is reported, as the log asked for no reply, and one that cannot be shown is
        logged, not parked (the conversation it speaks of is over; nothing waits on it)."""
        rlog = rlog.bind(notice=reply.notice)
        if reply.notice not in self.connector.notices or ERASED in (reply.contact, reply.text):
            rlog.info("outbound.notice_not_shown", reason="the channel shows no such notice or the customer was erased")
        else:
            try:
                result = await self.tries.deliver(reply, msg, rlog)
            except HoldLapsed:
                settling.hold_lapsed(msg, rlog)
                return
            except HandBack:
                await settling.hand_back(msg, rlog)
                return
            except Withdrawn:
                result = DeliveryResult.failed(WITHDRAWN_REASON)
            if result.ok:
                self.metrics.inc("notices_shown")
                rlog.info("outbound.notice_shown", provider_message_id=result.provider_message_id)
            else:
                self.metrics.inc("notices_failed")
                rlog.warning("outbound.notice_failed", reason=scrub(result.reason or "delivery failed"))
        with skipping("outbound.notice_ack", nats_subject=msg.subject):
            await msg.ack()


async def _drop(sub: Puller | None) -> None:
    if sub is not None:
        with skipping("outbound.unsubscribe"):
            await sub.unsubscribe()
