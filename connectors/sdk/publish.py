"""Publishing on ``rd.inbound.<channel>``: the messages a connector hears and the outcomes of the
replies it delivers. ``Nats-Msg-Id`` dedupe, and success only after every ack. A connector
never writes the log: intake records both (see ``services.intake``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from events import subjects
from events.acked import publish_acked
from events.codec import encode
from events.model import DeliverReply, InboundMessage, ReplyOutcomeReported
from events.redact import scrub
from events.storage_full import note_storage_full, storage_full

from .errors import Unavailable

MSG_ID = "Nats-Msg-Id"

# Tracing plugs in here when it is on (``services.tracing.configure``; connectors do not import
# ``services``): around the publish of one message, its span, yielding the W3C trace context
# headers to send with it. None (off, the default): nothing added, nothing imported.
trace_inbound: Callable[[InboundMessage, str], AbstractContextManager[Mapping[str, str]]] | None = None
# The same for a reply delivered: around its delivery and the report of its outcome, a span
# continuing the trace the reply was queued with (its NATS headers), yielding the headers
# the outcome report carries on to intake.
trace_outbound: Callable[[DeliverReply, Mapping[str, str] | None], AbstractContextManager[Mapping[str, str]]] | None = (
    None
)


def msg_id(message: InboundMessage) -> str:
    """The dedupe id: ``<channel>:<provider message id>``."""
    return f"{message.channel}:{message.provider_message_id}"


def outcome_msg_id(report: ReplyOutcomeReported) -> str:
    """The dedupe id of a reply's outcome: ``<channel>.outcome:<reply id>`` (a bounce:
    ``<channel>.bounce:<reply id>``). The dot keeps it apart from every message id (a
    channel name has none), whatever a provider's message ids look like."""
    kind = "bounce" if report.outcome == "bounced" else "outcome"
    return f"{report.channel}.{kind}:{report.reply_id}"


@dataclass(frozen=True)
class Reported:
    report: ReplyOutcomeReported
    seq: int
    duplicate: bool


@dataclass(frozen=True)
class Published:
    message: InboundMessage
    seq: int
    duplicate: bool
    # ``trace_id``/``span_id`` of the message's span, for the caller's log line; empty when off.
    trace_ids: Mapping[str, str] = field(default_factory=dict)


def _ids(trace: Mapping[str, str]) -> dict[str, str]:
    """``trace_id``/``span_id`` from a W3C ``traceparent`` (version-trace-span-flags)."""
    parts = trace.get("traceparent", "").split("-")
    return {"trace_id": parts[1], "span_id": parts[2]} if len(parts) == 4 else {}


class InboundPublisher:
    def __init__(self, nc: NATS, *, ack_timeout: float = 5.0) -> None:
        self.nc = nc
        self.ack_timeout = ack_timeout

    async def publish_one(self, message: InboundMessage) -> Published:
        if message.at.tzinfo is None:
            # Intake refuses it (events.model.Instant); said here, where the connector's author
            # sees it, rather than as a dead letter later.
            raise TypeError("InboundMessage.at has no time zone: use datetime.now(UTC) or the provider's own offset")
        subject = subjects.inbound(message.channel)
        headers = {MSG_ID: msg_id(message)}
        tracer = trace_inbound
        if tracer is None:
            ack = await publish_acked(self.nc, subject, encode(message), timeout=self.ack_timeout, headers=headers)
            return Published(message, ack.seq, ack.duplicate)
        with tracer(message, subject) as trace:
            headers.update(trace)
            ack = await publish_acked(self.nc, subject, encode(message), timeout=self.ack_timeout, headers=headers)
        return Published(message, ack.seq, ack.duplicate, _ids(trace))

    async def publish(self, messages: Sequence[InboundMessage]) -> list[Published]:
        """Publish all concurrently; return only when JetStream acknowledged each one.
        Any failure (timeout, disconnected, no stream, error) raises ``Unavailable``: the
        provider must retry, and dedupe makes the retry of the acked ones harmless."""
        if not messages:
            return []
        if self.nc.is_closed:
            raise Unavailable("event bus connection is closed")
        results: list[Published | BaseException] = []
        if len(messages) == 1:  # the usual webhook: no task, no gather, one timer (the ack's own)
            try:
                results.append(await self.publish_one(messages[0]))
            except (TimeoutError, NatsError, OSError) as err:
                results.append(err)
        else:
            try:
                async with asyncio.timeout(self.ack_timeout + 0.5):
                    results = await asyncio.gather(*(self.publish_one(m) for m in messages), return_exceptions=True)
            except TimeoutError as err:
                raise Unavailable("event bus did not acknowledge in time") from err
        out: list[Published] = []
        for result in results:
            if isinstance(result, (TimeoutError, NatsError, OSError)):
                raise _unavailable(result, messages[0].channel) from result
            if isinstance(result, BaseException):
                raise result
            out.append(result)
        return out

    async def report(self, report: ReplyOutcomeReported, trace: Mapping[str, str] | None = None) -> Reported:
        """Publish a reply's outcome on ``rd.inbound.<channel>``; return only when JetStream
        acknowledged it. A retry (same reply, same kind) is deduplicated by JetStream, and
        intake records one fact per reply whatever arrives. Raises ``Unavailable``."""
        if self.nc.is_closed:
            raise Unavailable("event bus connection is closed")
        if report.reason:
            # A provider's refusal often quotes the address ("The 'To' number +44… is not
            # valid"); RD_INBOUND holds it in clear, where no erasure of the customer reaches
            # it once it arrives late.
            report = msgspec.structs.replace(report, reason=scrub(report.reason))
        try:
            ack = await publish_acked(
                self.nc,
                subjects.inbound(report.channel),
                encode(report),
                timeout=self.ack_timeout,
                headers={MSG_ID: outcome_msg_id(report), **(trace or {})},
            )
        except (TimeoutError, NatsError, OSError) as err:
            raise _unavailable(err, report.channel) from err
        return Reported(report, ack.seq, ack.duplicate)


def _unavailable(err: BaseException, channel: str) -> Unavailable:
    """What the provider (or the outbound worker) is told when JetStream did not take a message:
    that its storage is full when that is why (``events.storage_full``), else the error's type."""
    if storage_full(err):
        note_storage_full("connector", err, channel=channel)  # the log says what to do
        return Unavailable("event bus refused the message: its storage is full")
    return Unavailable(f"event bus did not acknowledge: {type(err).__name__}")
