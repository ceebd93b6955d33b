"""One event as read from the log: its stream sequence, its subject and the event decoded."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.msg import Msg

from events.codec import decode_log_event
from events.model import LogEvent, UnknownEvent


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    subject: str
    event: LogEvent | UnknownEvent


def to_stored(msg: Msg) -> StoredEvent:
    """Never raises on the payload: one that does not decode is an ``Undecodable`` event."""
    return StoredEvent(
        seq=int(msg.metadata.sequence.stream),
        subject=msg.subject,
        event=decode_log_event(msg.data, subject=msg.subject),
    )
