"""What crosses the pipe between a whole-store rebuild's reader and its writer process
(``services.timelines.bulk``), and how.

The pipe carries frames: a 4-byte big-endian length, then a msgpack ``Request`` (parent to
child) or ``Reply`` (child to parent). The first request says which store to open (a DSN
never goes on a command line, where ``ps`` shows it).

Events with personal fields cross decoded and opened (the reader holds the keys); the others
cross as stored and the writer decodes them, so nothing is decoded twice. Opened personal
data crosses the pipe in clear, as it does into the projection itself: the pipe is private
to the two processes.
"""

from __future__ import annotations

import struct

import msgspec

from events.model import LogEvent

LENGTH = struct.Struct(">I")


class Open(msgspec.Struct, tag="open"):
    backend: str  # "sqlite" | "postgresql"
    target: str  # the file, or the DSN
    name: str  # the shadow tables' suffix, or the shadow schema
    reader: str  # the quarantine's reader name for events the store refuses


class Shipped(msgspec.Struct, array_like=True, omit_defaults=True):
    """A ``StoredEvent`` as it crosses the pipe, and as the writer reads it: msgpack decodes
    straight into it, and the fold reads ``seq``, ``subject`` and ``event`` from it as from a
    ``StoredEvent`` (no second object per event on the writer's side). An event with personal
    fields comes decoded and opened (``event``); one with none comes as stored (``raw``, the
    JSON on the log) and the writer decodes it: the reader does not decode it at all."""

    seq: int
    subject: str
    event: LogEvent | None = None
    raw: bytes | None = None


class Batch(msgspec.Struct, tag="batch"):
    events: list[Shipped]
    through: int  # the checkpoint after this batch (its last sequence, events or not)


class Finish(msgspec.Struct, tag="finish"):
    pass


Request = Open | Batch | Finish


class Refused(msgspec.Struct):
    seq: int
    subject: str
    error: str


class Applied(msgspec.Struct, tag="applied"):
    checkpoint: int
    refused: list[Refused] = []  # events the store kept refusing: the parent quarantines them


class Failed(msgspec.Struct, tag="failed"):
    error: str


Reply = Applied | Failed

_encoder = msgspec.msgpack.Encoder()
requests = msgspec.msgpack.Decoder(Request)
replies = msgspec.msgpack.Decoder(Reply)


def frame(message: msgspec.Struct) -> bytes:
    body = _encoder.encode(message)
    return LENGTH.pack(len(body)) + body
