"""Encoding and decoding of events; decoders are built once, at import."""

from __future__ import annotations

import msgspec

from events.model import DeliverReply, Event, InboundMessage, LogEvent, UnknownEvent

_encoder = msgspec.json.Encoder()
_log_decoder: msgspec.json.Decoder[LogEvent] = msgspec.json.Decoder(LogEvent)
_inbound_decoder = msgspec.json.Decoder(InboundMessage)
_reply_decoder = msgspec.json.Decoder(DeliverReply)


class _TagOnly(msgspec.Struct):
    type: str = ""


_tag_decoder = msgspec.json.Decoder(_TagOnly)


def encode(value: Event | DeliverReply) -> bytes:
    return _encoder.encode(value)


def decode_log_event(data: bytes) -> LogEvent | UnknownEvent:
    """Decode one RD_EVENTS payload.

    A tag this version does not know was written by a newer one: it comes back as
    ``UnknownEvent`` rather than an error, so old readers keep running. A payload with a
    known tag that does not validate is a real bug and raises ``msgspec.ValidationError``.
    """
    try:
        return _log_decoder.decode(data)
    except msgspec.ValidationError:
        tag = _tag_decoder.decode(data).type
        if tag and tag not in _KNOWN_TAGS:
            return UnknownEvent(type=tag, raw=bytes(data))
        raise


def decode_inbound(data: bytes) -> InboundMessage:
    return _inbound_decoder.decode(data)


def decode_reply(data: bytes) -> DeliverReply:
    return _reply_decoder.decode(data)


def _known_tags() -> frozenset[str]:
    tags: set[str] = set()
    for cls in LogEvent.__args__:
        tag = cls.__struct_config__.tag
        assert isinstance(tag, str)
        tags.add(tag)
    return frozenset(tags)


_KNOWN_TAGS = _known_tags()
