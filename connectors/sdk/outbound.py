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

What a ``DeliverReply`` asks of a connector, beyond ``text`` to ``contact``:

- ``attachments``: files to send with the text. Each ``Attachment.url`` is a short-lived
  signed public link to the file (``GET /v1/files/{token}`` on the API, no bearer needed),
  with ``name``, ``content_type`` and ``size``; a provider that fetches media by URL (Twilio
  MMS ``MediaUrl``, WhatsApp/Messenger ``link`` / ``url``) is handed the link, others download
  it and send the bytes (email: a MIME part). A connector that cannot send files fails the
  reply with a reason rather than sending the text alone.
- ``template`` (with ``template_values``, see ``template_values``): a provider-approved
  template message (WhatsApp) to send *instead of* ``text`` (which then holds a preview).
  Connectors without templates fail such a reply with a reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import aiohttp
import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events import subjects
from events.codec import decode_reply
from events.errors import describe_error
from events.model import DeliverReply, ReplyOutcomeReported
from events.parking import ParkingLot
from events.personal import ERASED, CustomerKeys, PersonalDataCipher
from events.pull import LOST_AFTER_S, Puller, asked_at
from events.redact import scrub
from events.skips import count_skip, skipping
from events.stopping import cancel_and_wait

from . import publish
from .base import Connector, ConnectorSettings, DeliveryResult, utcnow
from .deadletter import MaxDeliveriesWatch, Redelivery, dead_letter, ensure_consumer
from .errors import PermanentDeliveryError, TransientDeliveryError
from .metrics import Metrics
from .publish import InboundPublisher

log = structlog.get_logger("relaydesk.connector.outbound")

Outcome = ReplyOutcomeReported


# A command whose outcome cannot be reported is tried 6 times over about 7.5 minutes, then
# dead-lettered (terminated and parked in rd_parked); an undecodable one at once.
REDELIVERY = Redelivery(max_deliver=6, retry_delays=(2.0, 10.0, 30.0, 120.0, 300.0))


class HandBack(Exception):
    """The worker is stopping while a reply waits for its next try: it is handed back (nak)
    for the next process of the channel, not reported failed with tries left unused."""


class HoldLapsed(Exception):
    """This process may no longer hold the command: its ack wait may have run out unseen (the
    process paused, stopped with SIGSTOP, starved), so NATS may have handed it to another
    process of the channel, which sends it. Sending it here too would send it twice."""


def hold_margin(ack_wait: float) -> float:
    """How long before the ack wait runs out a hold counts as lapsed: a fifth, at most 5 s
    (round trips, scheduling)."""
    return min(ack_wait * 0.2, 5.0)


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


def template_values(reply: DeliverReply) -> list[str] | None:
    """The values of ``reply.template``'s parameters, in order; None when they cannot be read
    (the customer was erased, or the command is malformed): do not send then."""
    try:
        values = msgspec.json.decode(reply.template_values or "[]", type=list[str])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if reply.template is not None and len(values) != len(reply.template.parameters):
        return None
    return values


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
        # reply_id -> outcome already decided; a redelivery only reports it again.
        self._done: OrderedDict[str, Outcome] = OrderedDict()
        # The consumer's ack wait, and when the hold of the command being handled was last
        # known to be renewed (time.monotonic): a command is never sent once it may have lapsed.
        self._ack_wait = 30.0
        self._held_since = time.monotonic()
        # The batch being handled and the index of its next command: their holds are renewed
        # while a delivery waits out a long backoff or Retry-After (``_pause``).
        self._waiting: tuple[list[Msg], list[float], int] | None = None
        self._stop_requested = asyncio.Event()
        self.log = log.bind(connector=connector.name, channel=connector.channel)

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
        self._ack_wait = ack_wait
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
                held = [min(fetched_at, asked_at(msg) or fetched_at) for msg in msgs]
                for i, msg in enumerate(msgs):
                    if self._stopping:
                        # Hand the rest back now rather than after ack_wait.
                        for rest in msgs[i:]:
                            with skipping("outbound.nak_on_stop", nats_subject=rest.subject):
                                await rest.nak()
                        break
                    await self._keep_holding(msgs, held, i)
                    self._held_since = held[i]
                    self._waiting = (msgs, held, i + 1)
                    try:
                        await self._handle(msg)
                    finally:
                        self._waiting = None
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

    def _hold_may_have_lapsed(self, since: float) -> bool:
        return time.monotonic() - since >= self._ack_wait - hold_margin(self._ack_wait)

    async def _keep_holding(self, msgs: list[Msg], held: list[float], start: int) -> None:
        """Renew the hold of the batch's commands still waiting their turn (``held``: when
        each was last known held), so that slow deliveries ahead of them in the batch do not
        let them lapse; one that may have lapsed already is left as it is (``_deliver``). Only
        holds older than a quarter of the ack wait are renewed: not every waiting command's at
        every send (a batch of 10 cost up to 45 renewals)."""
        for j in range(start, len(msgs)):
            if self._hold_may_have_lapsed(held[j]):
                continue
            renewing = time.monotonic()
            if renewing - held[j] < self._ack_wait / 4:
                continue  # held recently enough: no publish per waiting command per send
            with skipping("outbound.in_progress", nats_subject=msgs[j].subject):
                await msgs[j].in_progress()
                held[j] = renewing

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
            await self._retry_or_park(msg, rlog, f"the reply could not be opened: {describe_error(err)}")
            return
        tracer = publish.trace_outbound  # tracing on: a span around delivery and report
        with tracer(reply, msg.headers) if tracer is not None else nullcontext({}) as trace:
            if reply.notice:
                await self._notice(reply, msg, rlog)
                return
            await self._send_and_report(reply, msg, rlog, trace)

    async def _send_and_report(self, reply: DeliverReply, msg: Msg, rlog: Any, trace: Mapping[str, str]) -> None:
        outcome = self._done.get(reply.reply_id)
        if outcome is None:
            if ERASED in (reply.contact, reply.text):  # the customer was erased: nothing to send, nowhere
                result = DeliveryResult.failed("the customer's personal data was erased")
            else:
                try:
                    result = await self._deliver(reply, msg, rlog)
                except HoldLapsed:
                    self._hold_lapsed(msg, rlog)
                    return
                except HandBack:
                    await self._hand_back(msg, rlog)
                    return
            outcome = self._outcome(reply, result)
            self._remember(reply.reply_id, outcome)
            if outcome.outcome == "sent":
                self.metrics.inc("delivered")
                rlog.info("outbound.delivered", provider_message_id=outcome.provider_message_id)
            else:
                self.metrics.inc("delivery_failed")
                rlog.warning("outbound.failed", reason=scrub(outcome.reason))
        try:
            await self._report(outcome, msg, rlog, trace)
            self._done.pop(reply.reply_id, None)
        except Exception as err:
            # The outcome is remembered: the redelivery reports it without sending again.
            rlog.warning("outbound.report_failed", error=type(err).__name__, stream_seq=msg.metadata.sequence.stream)
            count_skip("outbound.report_outcome")
            error = f"the outcome ({outcome.outcome}) could not be reported: {describe_error(err)}"
            await self._retry_or_park(msg, rlog, error)

    async def _report(self, outcome: Outcome, msg: Msg, rlog: Any, trace: Mapping[str, str]) -> None:
        """Report ``outcome`` and acknowledge ``msg``, tried again in place while the command is
        still held here (NATS restarting, a publish timing out). Found by a chaos audit: the
        command was handed back at the first failure, and another process of the channel, not
        knowing it was sent, sent it again. Raises the last error once the hold may lapse."""
        pause = 0.2
        give_up_at = time.monotonic() + self.redelivery.report_retry  # then handed back (_retry_or_park)
        while True:
            try:
                reported = await self.publisher.report(outcome, trace or None)
                rlog.debug("outbound.outcome_reported", seq=reported.seq, duplicate=reported.duplicate)
                await msg.ack()
                return
            except Exception as err:
                if time.monotonic() + pause >= min(give_up_at, self._hold_ends()):
                    raise
                count_skip("outbound.report_retry")
                rlog.warning("outbound.report_retrying", error=type(err).__name__, outcome=outcome.outcome)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
            if self.nc.is_connected and not self._hold_may_have_lapsed(self._held_since):
                await self._renew_hold(msg)

    async def _renew_hold(self, msg: Msg) -> None:
        """Ask NATS for a fresh ack wait on ``msg``, the command being handled. ``_held_since``
        moves only once the server took the request: a renewal that failed leaves the hold to
        lapse when it would have (``_hold_may_have_lapsed`` then says so)."""
        renewing = time.monotonic()
        with skipping("outbound.in_progress", nats_subject=msg.subject):
            await msg.in_progress()
            self._held_since = renewing

    def _hold_ends(self) -> float:
        """When the hold renewed last counts as lapsed (``time.monotonic``)."""
        return self._held_since + self._ack_wait - hold_margin(self._ack_wait)

    async def _notice(self, reply: DeliverReply, msg: Msg, rlog: Any) -> None:
        """A notice is shown once if the connector can (its ``notices``), then acknowledged:
        no outcome is reported, as the log asked for no reply, and one that cannot be shown is
        logged, not parked (the conversation it speaks of is over; nothing waits on it)."""
        rlog = rlog.bind(notice=reply.notice)
        if reply.notice not in self.connector.notices or ERASED in (reply.contact, reply.text):
            rlog.info("outbound.notice_not_shown", reason="the channel shows no such notice or the customer was erased")
        else:
            try:
                result = await self._deliver(reply, msg, rlog)
            except HoldLapsed:
                self._hold_lapsed(msg, rlog)
                return
            except HandBack:
                await self._hand_back(msg, rlog)
                return
            if result.ok:
                self.metrics.inc("notices_shown")
                rlog.info("outbound.notice_shown", provider_message_id=result.provider_message_id)
            else:
                self.metrics.inc("notices_failed")
                rlog.warning("outbound.notice_failed", reason=scrub(result.reason or "delivery failed"))
        with skipping("outbound.notice_ack", nats_subject=msg.subject):
            await msg.ack()

    def _hold_lapsed(self, msg: Msg, rlog: Any) -> None:
        """Neither sent, acknowledged nor handed back (a nak could hand it to a third process
        while another sends it): NATS gives it to a process of the channel once its ack wait
        has run out, if it has not already."""
        count_skip("outbound.hold_lapsed")
        rlog.warning(
            "outbound.hold_lapsed",
            stream_seq=msg.metadata.sequence.stream,
            delivery=msg.metadata.num_delivered,
            skipped="sending it here: its ack wait may have run out, so another process may send it",
        )

    async def _hand_back(self, msg: Msg, rlog: Any) -> None:
        """Stopping between two tries: the command goes back to the queue now (the next process
        of the channel tries it), neither sent nor failed here."""
        rlog.info(
            "outbound.handed_back",
            stream_seq=msg.metadata.sequence.stream,
            delivery=msg.metadata.num_delivered,
            reason="stopping while the provider was being retried",
        )
        with skipping("outbound.nak_on_stop", nats_subject=msg.subject):
            await msg.nak()

    async def _retry_or_park(self, msg: Msg, rlog: Any, error: str) -> None:
        """Hand ``msg`` back after the next pause, or, at its last allowed delivery, terminate
        it and park it as a dead letter with ``error``: bounded, never a hot loop."""
        delivered = msg.metadata.num_delivered or 1
        try:
            if self.redelivery.exhausted(delivered):
                await dead_letter(self.parking, msg, reader=self.reader, error=error)
            else:
                await msg.nak(delay=self.redelivery.delay_after(delivered))
        except Exception as settle_err:  # NATS away: the server redelivers after ack_wait
            rlog.warning(
                "outbound.settle_failed",
                error=type(settle_err).__name__,
                delivery=delivered,
                stream_seq=msg.metadata.sequence.stream,
                nats_subject=msg.subject,
            )
            count_skip("outbound.settle")

    def _remember(self, reply_id: str, outcome: Outcome) -> None:
        self._done[reply_id] = outcome
        while len(self._done) > 10_000:
            self._done.popitem(last=False)

    def _outcome(self, reply: DeliverReply, result: DeliveryResult) -> Outcome:
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

    async def _deliver(self, reply: DeliverReply, msg: Msg, rlog: Any) -> DeliveryResult:
        s = self.connector.settings
        attempts = max(1, s.deliver_attempts)
        result = DeliveryResult.failed("not attempted")
        for attempt in range(1, attempts + 1):
            if self._hold_may_have_lapsed(self._held_since):
                raise HoldLapsed
            await self._renew_hold(msg)
            result = await self._attempt(reply)
            if not result.ok and self._hold_may_have_lapsed(self._held_since):
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
            if self._stopping:
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
            # Renewed once a quarter of the ack wait old: at once after a long try (a try
            # may take most of the ack wait), then every quarter.
            renew_in = self._held_since + self._ack_wait / 4 - time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, min(left, renew_in))):
                    await self._stop_requested.wait()
            except TimeoutError:
                pass
            else:
                raise HandBack
            if deadline - time.monotonic() <= 0 or self._hold_may_have_lapsed(self._held_since):
                break  # lapsed (the process stalled): the next try's check leaves it
            await self._renew_hold(msg)
            if self._waiting is not None:
                await self._keep_holding(*self._waiting)

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
        except Exception as err:
            self.log.exception("outbound.deliver_crashed", reply_id=reply.reply_id)
            return DeliveryResult.failed(f"connector error ({type(err).__name__})")


async def _drop(sub: Puller | None) -> None:
    if sub is not None:
        with skipping("outbound.unsubscribe"):
            await sub.unsubscribe()
