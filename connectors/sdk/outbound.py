"""The outbound worker: deliver ``rd.out.<channel>`` commands and record the outcome.

A durable pull consumer on the ``RD_OUTBOUND`` work queue, filtered to the connector's
channel. For each ``DeliverReply`` it calls ``Connector.deliver`` (transient failures are
retried with exponential backoff and jitter), appends ``MessageSent`` or ``DeliveryFailed``
to the conversation's subject, then acks. A fresh fetch request is issued every round and the
subscription is rebuilt after errors or reconnects (nats.py pull subscriptions may not resume
after a server restart). A redelivered command is checked against the log first, so a reply
whose outcome is already recorded is not sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
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
from events.model import DeliverReply, DeliveryFailed, MessageSent
from events.store import Append, EventStore

from .base import Connector, DeliveryResult, scrub, utcnow
from .errors import PermanentDeliveryError, TransientDeliveryError
from .metrics import Metrics

log = structlog.get_logger("relaydesk.connector.outbound")

Outcome = MessageSent | DeliveryFailed


def durable_name(connector: Connector) -> str:
    return f"connector_{subjects.token(connector.name)}"


def outcome_msg_id(reply: DeliverReply) -> str:
    return f"delivery:{reply.channel}:{reply.reply_id}"


class OutboundWorker:
    def __init__(self, connector: Connector, nc: NATS, js: JetStreamContext, store: EventStore, metrics: Metrics):
        self.connector = connector
        self.nc = nc
        self.js = js
        self.store = store
        self.metrics = metrics
        self.subject = subjects.outbound(connector.channel)
        self.durable = durable_name(connector)
        self.state = "idle"
        self.last_error = ""
        self._stopping = False
        self._idle = True
        self._task: asyncio.Task[None] | None = None
        # reply_id -> outcome already decided; a redelivery only re-records it.
        self._done: OrderedDict[str, Outcome] = OrderedDict()
        self.log = log.bind(connector=connector.name, channel=connector.channel)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"outbound-{self.connector.name}")

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
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
        if not task.done():
            task.cancel()
        # Collect the result so no "exception never retrieved" is left behind.
        await asyncio.gather(task, return_exceptions=True)
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
        # Long enough for every attempt; `in_progress` extends it before each try anyway.
        ack_wait = max(30.0, s.deliver_timeout * 2 + s.deliver_backoff * 2**s.deliver_attempts)
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=1000,
        )

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        return await self.js.pull_subscribe(
            self.subject, durable=self.durable, stream=subjects.OUTBOUND_STREAM, config=self._consumer_config()
        )

    async def _run(self) -> None:
        s = self.connector.settings
        sub: JetStreamContext.PullSubscription | None = None
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
                    sub = await self._subscribe()
                    self.state = "running"
                    self.last_error = ""
                    self.log.info("outbound.subscribed", subject=self.subject, durable=self.durable)
                try:
                    self._idle = True
                    msgs = await sub.fetch(s.outbound_batch, timeout=s.outbound_fetch_timeout)
                except TimeoutError:
                    continue
                finally:
                    self._idle = False
                for i, msg in enumerate(msgs):
                    if self._stopping:
                        # Hand the rest back now rather than after ack_wait.
                        for rest in msgs[i:]:
                            with contextlib.suppress(Exception):
                                await rest.nak()
                        break
                    await self._handle(msg)
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

    # -- one command ----------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        try:
            reply = decode_reply(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            self.log.error("outbound.undecodable", error=str(err)[:200])
            await msg.term()
            return
        rlog = self.log.bind(reply_id=reply.reply_id, conversation_id=reply.conversation_id)
        outcome = self._done.get(reply.reply_id)
        if outcome is None and msg.metadata.num_delivered and msg.metadata.num_delivered > 1:
            outcome = await self._recorded(reply)
            if outcome is not None:
                rlog.info("outbound.already_recorded", outcome=type(outcome).__name__)
                await msg.ack()
                return
        if outcome is None:
            result = await self._deliver(reply, msg, rlog)
            outcome = self._outcome(reply, result)
            self._remember(reply.reply_id, outcome)
            if isinstance(outcome, MessageSent):
                self.metrics.inc("delivered")
                rlog.info("outbound.delivered", provider_message_id=outcome.provider_message_id)
            else:
                self.metrics.inc("delivery_failed")
                rlog.warning("outbound.failed", reason=scrub(outcome.reason))
        try:
            await self.store.append(Append(outcome, msg_id=outcome_msg_id(reply)))
            await msg.ack()
            self._done.pop(reply.reply_id, None)
        except Exception as err:
            # The outcome is remembered: the redelivery records it without sending again.
            rlog.warning("outbound.record_failed", error=type(err).__name__)
            with contextlib.suppress(Exception):
                await msg.nak(delay=2.0)

    def _remember(self, reply_id: str, outcome: Outcome) -> None:
        self._done[reply_id] = outcome
        while len(self._done) > 10_000:
            self._done.popitem(last=False)

    async def _recorded(self, reply: DeliverReply) -> Outcome | None:
        """The outcome of ``reply`` if the log has it already (checked on redelivery only)."""
        try:
            stored = await self.store.read(subjects.conversation(reply.customer_id, reply.conversation_id))
        except Exception as err:
            self.log.warning("outbound.log_check_failed", error=type(err).__name__)
            return None
        for item in stored:
            event = item.event
            if isinstance(event, (MessageSent, DeliveryFailed)) and event.reply_id == reply.reply_id:
                return event
        return None

    def _outcome(self, reply: DeliverReply, result: DeliveryResult) -> Outcome:
        if result.ok:
            return MessageSent(
                at=utcnow(),
                customer_id=reply.customer_id,
                conversation_id=reply.conversation_id,
                channel=reply.channel,
                reply_id=reply.reply_id,
                provider_message_id=result.provider_message_id,
            )
        return DeliveryFailed(
            at=utcnow(),
            customer_id=reply.customer_id,
            conversation_id=reply.conversation_id,
            channel=reply.channel,
            reply_id=reply.reply_id,
            reason=result.reason or "delivery failed",
        )

    async def _deliver(self, reply: DeliverReply, msg: Msg, rlog: Any) -> DeliveryResult:
        s = self.connector.settings
        attempts = max(1, s.deliver_attempts)
        result = DeliveryResult.failed("not attempted")
        for attempt in range(1, attempts + 1):
            with contextlib.suppress(Exception):
                await msg.in_progress()
            result = await self._attempt(reply)
            if result.ok or not result.retryable:
                return result
            rlog.info("outbound.transient_failure", attempt=attempt, reason=scrub(result.reason))
            if attempt < attempts and not self._stopping:
                self.metrics.inc("delivery_retries")
                delay = s.deliver_backoff * 2 ** (attempt - 1)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
            else:
                break
        return DeliveryResult.failed(f"{result.reason} (after {attempt} attempts)")

    async def _attempt(self, reply: DeliverReply) -> DeliveryResult:
        try:
            async with asyncio.timeout(self.connector.settings.deliver_timeout + 1.0):
                return await self.connector.deliver(reply)
        except TransientDeliveryError as err:
            return DeliveryResult.failed(err.reason, retryable=True)
        except PermanentDeliveryError as err:
            return DeliveryResult.failed(err.reason)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            # The exception text may carry the API URL (and a token in it): keep the type only.
            return DeliveryResult.failed(f"provider unreachable ({type(err).__name__})", retryable=True)
        except Exception as err:
            self.log.exception("outbound.deliver_crashed", reply_id=reply.reply_id)
            return DeliveryResult.failed(f"connector error ({type(err).__name__})")


async def _drop(sub: JetStreamContext.PullSubscription | None) -> None:
    if sub is not None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
