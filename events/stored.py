"""One event as read from the log: its stream sequence, its subject and the event decoded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from events.codec import decode_log_event
from events.model import LogEvent, UnknownEvent

if TYPE_CHECKING:  # a type only: the rebuild's writer reads stored events without nats-py
    from nats.aio.msg import Msg

# W3C trace context (https://www.w3.org/TR/trace-context/) as written beside an event in its
# NATS headers when tracing is on (services/tracing.py); nothing is written when it is off.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    subject: str
    event: LogEvent | UnknownEvent
    # The trace context the event was appended under (``traceparent``/``tracestate``), None
    # when it carries none. Metadata, not part of the fact: equality ignores it.
    trace: Mapping[str, str] | None = field(default=None, compare=False)


def trace_context(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The W3C trace context in a message's headers, None when it carries none."""
    if not headers:
        return None
    parent = headers.get(TRACEPARENT)
    if not parent:
        return None
    state = headers.get(TRACESTATE)
    return {TRACEPARENT: parent, TRACESTATE: state} if state else {TRACEPARENT: parent}


def to_stored(msg: Msg) -> StoredEvent:
    """Never raises on the payload: one that does not decode is an ``Undecodable`` event."""
    return StoredEvent(
        seq=int(msg.metadata.sequence.stream),
        subject=msg.subject,
        event=decode_log_event(msg.data, subject=msg.subject),
        trace=trace_context(msg.headers),
    )
