"""Encoding and decoding of events; decoders are built once, at import."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import structlog
from prometheus_client import Counter

from events import subjects
from events.model import DeliverReply, Event, InboundMessage, InboundRecord, LogEvent, UnknownEvent
from events.redact import redact_error

log = structlog.get_logger("relaydesk.events")

_encoder = msgspec.json.Encoder()
_log_decoder: msgspec.json.Decoder[LogEvent] = msgspec.json.Decoder(LogEvent)
_inbound_decoder: msgspec.json.Decoder[InboundRecord] = msgspec.json.Decoder(InboundRecord)
_untagged_inbound_decoder = msgspec.json.Decoder(InboundMessage)
_reply_decoder = msgspec.json.Decoder(DeliverReply)


class _TagOnly(msgspec.Struct):
    type: str = ""


_tag_decoder = msgspec.json.Decoder(_TagOnly)


def encode(value: Event | DeliverReply) -> bytes:
    return _encoder.encode(value)


class Undecodable(UnknownEvent, frozen=True, kw_only=True):
    """A payload on the log that is no event at all: not JSON, no tag, or a known tag whose
    fields do not validate. A poison message, not a newer writer's fact.

    It is an ``UnknownEvent``, so every fold skips it the way it skips a fact from a newer
    version (and still counts its sequence); the store quarantines it (see
    ``events.quarantine``). ``type`` is the tag when one could be read, else "".
    ``customer_id`` is the customer whose subject holds it (None off ``rd.evt.c``), so a
    fold of a customer's history keeps its per-customer sequence right."""

    error: str
    customer_id: str | None = None


def decode_log_event(data: bytes, *, subject: str = "") -> LogEvent | UnknownEvent:
    """Decode one RD_EVENTS payload; never raises.

    A tag this version does not know was written by a newer one: it comes back as
    ``UnknownEvent``, so old readers keep running. Anything else that does not decode
    (bytes that are not JSON, no tag, a known tag whose fields do not validate) comes back
    as ``Undecodable`` with the error: one bad message must not stop a reader of the log.
    ``subject`` (where the payload was stored) names the customer of an ``Undecodable``.
    """
    try:
        event = _log_decoder.decode(data)
    except msgspec.DecodeError as err:  # ValidationError is a DecodeError
        tag = _tag_of(data)
        if tag and tag not in _KNOWN_TAGS and isinstance(err, msgspec.ValidationError):
            _unknown_type_seen(tag, subject)
            return UnknownEvent(type=tag, raw=bytes(data))
        return Undecodable(type=tag, raw=bytes(data), error=redact_error(str(err)), customer_id=_customer_of(subject))
    if subject.startswith(_LOG_PREFIX) and (wrong := _misplaced(event, subject)):
        return Undecodable(type=_tag_of(data), raw=bytes(data), error=wrong, customer_id=_customer_of(subject))
    return event


# A type this version does not know is skipped by every fold: said once per type and
# process, and counted, so a typo'd or newer writer's event is not invisible. Types come
# from the log: the first few dozen are named, the rest counted together.
UNKNOWN_EVENTS = Counter(
    "relaydesk_unknown_events_total", "Log events of a type this version does not know, skipped", ["type"]
)
_NAMED_UNKNOWN = 50
_unknown_seen: set[str] = set()


def _unknown_type_seen(tag: str, subject: str) -> None:
    if tag not in _unknown_seen and len(_unknown_seen) < _NAMED_UNKNOWN:
        _unknown_seen.add(tag)
        log.warning(
            "log.unknown_event_type",
            type=tag[:64],
            nats_subject=subject,
            action="skipped by every fold of this version (a newer writer's, or a mistake)",
        )
    UNKNOWN_EVENTS.labels(type=tag[:64] if tag in _unknown_seen else "other").inc()


_LOG_PREFIX = "rd.evt."
# Times a reader can do arithmetic with (a year-9999 event overflowed the reports' sums).
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _misplaced(event: LogEvent, subject: str) -> str:
    """Why ``event`` cannot stand at ``subject`` on the log ("" when it can). Readers take a
    conversation from the subject and its ids from the body: one naming another conversation
    (a hand-published or restored event) resolved one in the router and another in the
    timelines, and its customer guard kept intake conflicting until it gave up."""
    place = _PLACES.get(type(event))
    if place == "conversation":  # the common case, checked without building a token list
        fast = f"rd.evt.c.{event.customer_id}.{event.conversation_id}"  # type: ignore[union-attr]
        placed = subject == fast and subject.count(".") == 4
    elif place == "agent":
        placed = subject == f"rd.evt.a.{event.agent_id}" and subject.count(".") == 3  # type: ignore[union-attr]
    else:
        placed = False
    if not placed:
        try:
            expected = subjects.for_event(event)
        except (TypeError, ValueError) as err:
            return f"no place on the log: {err}"
        if expected != subject:
            return f"its ids belong on {expected}, not on {subject}"
    if not _EARLIEST <= event.at < _LATEST:
        return f"its time {event.at.isoformat()} is outside {_EARLIEST.year}-{_LATEST.year}"
    return ""


def _tag_of(data: bytes) -> str:
    try:
        return _tag_decoder.decode(data).type
    except msgspec.DecodeError:
        return ""


def _customer_of(subject: str) -> str | None:
    parts = subject.split(".")
    return parts[3] if len(parts) == 5 and parts[:3] == ["rd", "evt", "c"] else None


def decode_inbound(data: bytes) -> InboundRecord:
    """Decode one RD_INBOUND payload: an ``InboundMessage`` or a ``ReplyOutcomeReported``.

    A message without a ``type`` (the single-struct decoder used to accept one) is an
    ``InboundMessage``. Anything else that does not validate raises ``msgspec.ValidationError``
    (or ``msgspec.DecodeError`` for bytes that are not JSON).
    """
    try:
        return _inbound_decoder.decode(data)
    except msgspec.ValidationError:
        if _tag_decoder.decode(data).type:
            raise
        return _untagged_inbound_decoder.decode(data)


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


def _places() -> dict[type, str]:
    """Per log event class, the kind of subject it stands on (as ``subjects.for_event`` says)."""
    places: dict[type, str] = {}
    for cls in LogEvent.__args__:
        if issubclass(cls, subjects.AGENT_FACTS):
            places[cls] = "agent"
        elif "conversation_id" in cls.__struct_fields__ and "customer_id" in cls.__struct_fields__:
            places[cls] = "conversation"
    return places


_PLACES = _places()


def known_tag(tag: str) -> bool:
    """Whether this version decodes events of type ``tag`` (a fold that skipped one as unknown
    must fold it again: ``router.snapshot``)."""
    return tag in _KNOWN_TAGS
