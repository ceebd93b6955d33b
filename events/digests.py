"""An event known by its content: a re-published event (the same fact written again at a later
sequence: an operator's partial restore after JetStream's duplicate window, a replay tool run
twice) is recognised by the folds that must count each fact once (router.replays, the timelines).

Events carry no id of their own, so the digest covers the event's tag and every field, with its
personal fields blanked first: two genuine events never encode alike (each has its own time and
ids), a digest kept beside a projection or in a snapshot cannot be used to confirm a guess of a
customer's text or number after an erasure, and an event reads the same sealed, opened or
erased."""

from __future__ import annotations

import hashlib

import msgspec

from events.personal.box import apply
from events.personal.fields import PERSONAL_FIELDS

DIGEST = 8  # bytes: 2^-64 a pair, among one conversation's events or one customer's conversations

_encoder = msgspec.msgpack.Encoder()


def _blank(_name: str, _value: str) -> str:
    return ""


def fingerprint(event: msgspec.Struct) -> bytes:
    """The DIGEST-byte digest of the event's content, personal fields left out."""
    fields = PERSONAL_FIELDS.get(type(event))
    if fields is not None:
        event = apply(event, fields, _blank, only_envelopes=False)
    try:
        content = _encoder.encode(event)
    except (OverflowError, ValueError):  # a time at the edge of the calendar has no UTC form
        content = repr(event).encode()
    return hashlib.blake2b(content, digest_size=DIGEST).digest()


def remembered(digests: bytes, event: msgspec.Struct) -> bytes | None:
    """``digests`` with ``event``'s digest added; None when it is among them already (the event
    was folded before: a re-published one)."""
    digest = fingerprint(event)
    return None if holds(digests, digest) else digests + digest


def holds(digests: bytes, digest: bytes) -> bool:
    """``digest`` is one of the DIGEST-byte digests ``digests`` is made of (aligned)."""
    at = digests.find(digest)
    while at >= 0:
        if at % DIGEST == 0:
            return True
        at = digests.find(digest, at + 1)
    return False
