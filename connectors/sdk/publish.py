"""Publishing on ``rd.inbound.<channel>``: the messages a connector hears and the outcomes of the
replies it delivers. ``Nats-Msg-Id`` dedupe, and success only after every ack. A connector
never writes the log: intake records both (see ``services.intake``)."""

from __future__ import annotations

import asyncio
import re
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

from .errors import Malformed, TooLarge, Unavailable

MSG_ID = "Nats-Msg-Id"
# The longest provider message id taken (characters): Twilio's sids are 34, Meta's ids a few
# hundred at most, an email Message-ID within a 998-character header line. The id rides in a
# NATS header and JetStream keeps it in its dedupe table for the whole window.
MAX_MESSAGE_ID_CHARS = 1000
# What a NATS message carries besides the header's values: "NATS/1.0", the name, separators.
_HEADER_OVERHEAD = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

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


def unusable_message_id(provider_message_id: str) -> str | None:
    """Why ``provider_message_id`` cannot name a message on the bus (None: it can). It is sent
    as the ``Nats-Msg-Id`` header, which nats-py writes as given: a CR or LF in it started
    headers of the sender's choosing (found by an audit: a signed Meta ``mid`` ending in
    ``\\r\\nNats-Expected-Last-Sequence: 5`` was published with that header)."""
    if len(provider_message_id) > MAX_MESSAGE_ID_CHARS:
        return f"provider message id over {MAX_MESSAGE_ID_CHARS} characters"
    if _CONTROL.search(provider_message_id):
        return "provider message id holds control characters"
    return None


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


# Messages of one request published at once, each window within the ack's deadline.
PUBLISH_WINDOW = 512


class InboundPublisher:
    def __init__(self, nc: NATS, *, ack_timeout: float = 5.0) -> None:
        self.nc = nc
        self.ack_timeout = ack_timeout

    async def publish_one(self, message: InboundMessage) -> Published:
        return await self._publish_one(message, self._checked(message))

    def _checked(self, message: InboundMessage) -> bytes:
        """``message`` encoded, once it is known the bus can take it: ``Malformed`` for an id no
        header can carry, ``TooLarge`` for more than the server's ``max_payload``. nats-py
        checks the payload alone; with the headers over the limit the server closed the
        connection, failing every request in flight (found by an audit: one 600 KB ``mid``),
        and a payload over it was "unavailable, try again" for ever (Meta retries for 36 h)."""
        if message.at.tzinfo is None:
            # Intake refuses it (events.model.Instant); said here, where the connector's author
            # sees it, rather than as a dead letter later.
            raise TypeError("InboundMessage.at has no time zone: date a message when it arrives, self.now() (UTC)")
        if why := unusable_message_id(message.provider_message_id):
            raise Malformed(why)
        payload = encode(message)
        size = len(payload) + len(msg_id(message).encode()) + _HEADER_OVERHEAD
        limit = getattr(self.nc, "max_payload", 0)  # from the server's INFO; 0 before connecting
        if isinstance(limit, int) and 0 < limit < size:
            raise TooLarge(f"a message of {size} bytes is over the event bus's limit of {limit} bytes")
        return payload

    async def _publish_one(self, message: InboundMessage, payload: bytes) -> Published:
        subject = subjects.inbound(message.channel)
        headers = {MSG_ID: msg_id(message)}
        tracer = trace_inbound
        if tracer is None:
            ack = await publish_acked(self.nc, subject, payload, timeout=self.ack_timeout, headers=headers)
            return Published(message, ack.seq, ack.duplicate)
        with tracer(message, subject) as trace:
            headers.update(trace)
            ack = await publish_acked(self.nc, subject, payload, timeout=self.ack_timeout, headers=headers)
        return Published(message, ack.seq, ack.duplicate, _ids(trace))

    async def publish(self, messages: Sequence[InboundMessage]) -> list[Published]:
        """Publish all concurrently; return only when JetStream acknowledged each one.
        Any failure (timeout, disconnected, no stream, error) raises ``Unavailable``: the
        provider must retry, and dedupe makes the retry of the acked ones harmless. A message
        the bus cannot take raises ``Malformed``/``TooLarge`` before any is published."""
        if not messages:
            return []
        if self.nc.is_closed:
            raise Unavailable("event bus connection is closed")
        payloads = [self._checked(m) for m in messages]
        results: list[Published | BaseException] = []
        if len(messages) == 1:  # the usual webhook: no task, no gather, one timer (the ack's own)
            try:
                results.append(await self._publish_one(messages[0], payloads[0]))
            except (TimeoutError, NatsError, OSError) as err:
                results.append(err)
        else:
            # A window at a time, each with the ack's deadline: one deadline for the whole batch
            # failed every batch larger than what NATS acks within it (a signed Meta batch of
            # 60,000 items: a 503 each time it came again, for as long as Meta retried).
            pairs = list(zip(messages, payloads, strict=True))
            for start in range(0, len(pairs), PUBLISH_WINDOW):
                window = pairs[start : start + PUBLISH_WINDOW]
                try:
                    async with asyncio.timeout(self.ack_timeout + 0.5):
                        results += await asyncio.gather(
                            *(self._publish_one(m, p) for m, p in window), return_exceptions=True
                        )
                except TimeoutError as err:
                    raise Unavailable("event bus did not acknowledge in time") from err
                if any(isinstance(result, BaseException) for result in results[start:]):
                    break  # the provider retries the batch: the acked ones are deduped
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
