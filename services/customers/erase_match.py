"""Which stored messages and records concern the customers an erasure takes
(``services.customers.erase``).

The messages most likely to outlive an erasure are the ones no reader could decode: a dead
letter whose fields have the wrong types, a mail that would not parse. So nothing here
decodes into a strict type. A message is read as loosely as JSON allows (the fields an
erasure matches on, each only if it has the right type), and one that gives no usable field
(not JSON, not an object, no sender, customer or message id) is searched as bytes for the
family's ids and addresses.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from connectors.chat.history import Frame
from connectors.chat.tokens import provider_message_id as chat_message_id
from connectors.email.erasure import attachment_ref
from connectors.email.unparsed import PARKED_STREAM as UNPARSED_MAIL
from connectors.email.unparsed import RAW_OBJECT_HEADER
from events import subjects
from events.model import ConversationOpened, MessageReceived, ReplyRequested

# A needle shorter than this matches too much of other people's bytes to erase on.
MIN_NEEDLE = 6

SenderIdentity = Callable[[str, str, str | None], str | None]  # (channel, sender, platform) -> identity


@dataclass
class Family:
    """What the log says of the customers an erasure takes."""

    ids: list[str]
    identities: set[str] = field(default_factory=set)
    unlinked: set[str] = field(default_factory=set)  # addresses taken away from it (IdentityUnlinked)
    provider_ids: set[str] = field(default_factory=set)
    reply_ids: set[str] = field(default_factory=set)
    attachments: set[tuple[str, str]] = field(default_factory=set)
    uploads: set[tuple[str, str]] = field(default_factory=set)  # (bucket, up_…) sent in replies
    open_conversations: dict[str, str] = field(default_factory=dict)  # conversation -> customer
    conversations: set[str] = field(default_factory=set)  # every conversation of the family
    read_to: int = 0  # the last stream sequence of the family's log read for this (RD_EVENTS)

    def note(self, event: object) -> None:
        """Add what the family's raw messages, queued replies and chat frames are told by, from
        one event of its log (opened): provider message ids, reply ids, conversations."""
        if isinstance(event, MessageReceived):
            self.provider_ids.add(f"{event.channel}:{event.provider_message_id}")
        elif isinstance(event, ReplyRequested):
            self.reply_ids.add(event.reply_id)
        elif isinstance(event, ConversationOpened):
            self.conversations.add(event.conversation_id)

    def needles(self) -> list[bytes]:
        """The family's ids and addresses as lower-case bytes, for bytes no reader could
        decode (a phone number also by its digits alone: ``+44 7700…`` or ``447700…``)."""
        found: set[str] = set(self.ids)
        for identity in self.identities:
            kind, _, address = identity.partition(":")
            found.add(address)
            if kind == "phone":
                found.add("".join(ch for ch in address if ch.isdigit()))
        return sorted({n.lower().encode() for n in found if len(n) >= MIN_NEEDLE})


@dataclass(frozen=True)
class Inbound:
    """The fields of a message on ``rd.inbound.<channel>`` or ``rd.out.<channel>`` (a provider
    message, a reply outcome, a reply to send) an erasure matches on; empty where absent or
    of the wrong type."""

    channel: str = ""
    sender: str = ""
    provider_message_id: str = ""
    customer_id: str = ""
    platform: str | None = None
    attachments: tuple[dict[str, Any], ...] = ()

    @property
    def identified(self) -> bool:
        return bool(self.sender or self.customer_id or self.provider_message_id)


def read_inbound(data: bytes) -> Inbound | None:
    """``data`` as an ``Inbound``; None when it is not a JSON object."""
    try:
        raw = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None

    def text(name: str) -> str:
        value = raw.get(name)
        return value if isinstance(value, str) else ""

    metadata = raw.get("metadata")
    platform = metadata.get("platform") if isinstance(metadata, dict) else None
    attachments = raw.get("attachments")
    return Inbound(
        channel=text("channel"),
        sender=text("sender"),
        provider_message_id=text("provider_message_id"),
        customer_id=text("customer_id"),
        platform=platform if isinstance(platform, str) else None,
        attachments=tuple(a for a in attachments if isinstance(a, dict)) if isinstance(attachments, list) else (),
    )


class _Record(msgspec.Struct):
    """A delivery record (``customer_id``), a parked message (``stream``, ``subject``, ``data``,
    ``headers``) or a kept API answer (``fingerprint``, ``refs``)."""

    customer_id: Any = ""
    stream: Any = ""
    subject: Any = ""
    data: Any = ""  # bytes in the record, so base64 in its JSON
    headers: Any = None
    fingerprint: Any = ""
    refs: Any = None


class FamilyMatcher:
    def __init__(self, family: Family, sender_identity: SenderIdentity, attachment_bucket: str) -> None:
        self.family = family
        self.sender_identity = sender_identity
        self.attachment_bucket = attachment_bucket
        self._needles = family.needles()

    def mentions(self, data: bytes) -> bool:
        """Whether ``data`` holds one of the family's ids or addresses (any case)."""
        haystack = data.lower()
        return any(needle in haystack for needle in self._needles)

    def inbound(self, data: bytes) -> Inbound | None:
        """The message if it concerns the family (its customer, one of its provider message
        ids, or a sender address of theirs; by its bytes when it names none), else None."""
        item = read_inbound(data)
        if item is None or not item.identified:
            return (item or Inbound()) if self.mentions(data) else None
        family = self.family
        if item.customer_id in family.ids or f"{item.channel}:{item.provider_message_id}" in family.provider_ids:
            return item
        if item.sender and self.sender_identity(item.channel, item.sender, item.platform) in family.identities:
            return item
        return None

    def record(self, data: bytes) -> tuple[bool, set[tuple[str, str]]]:
        """Whether a KV record (delivery record, parked message, kept API answer) concerns the
        family, and the stored objects it points at that go with it (an unparseable mail's raw
        bytes, a dead letter's attachments)."""
        try:
            record = msgspec.json.decode(data, type=_Record)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return self.mentions(data), set()
        family = self.family
        if record.fingerprint:  # a kept API answer: sealed, found by the ids it concerned
            refs = record.refs if isinstance(record.refs, list) else []
            ours = set(family.ids) | family.conversations
            return any(isinstance(r, str) and r in ours for r in refs), set()
        if isinstance(record.customer_id, str) and record.customer_id in family.ids:
            return True, set()
        parsed = subjects.parse_conversation_subject(record.subject) if isinstance(record.subject, str) else None
        if parsed is not None:
            return parsed[0] in family.ids, set()
        payload = _bytes(record.data)
        if record.stream == UNPARSED_MAIL:
            headers = record.headers if isinstance(record.headers, dict) else {}
            raw = attachment_ref(headers.get(RAW_OBJECT_HEADER), None, "")
            return self.mentions(payload), {raw} if raw else set()
        if payload:
            item = self.inbound(payload)
            return item is not None, set(attachment_refs(item.attachments, self.attachment_bucket)) if item else set()
        return False, set()


def attachment_refs(attachments: Iterable[dict[str, Any]], default_bucket: str) -> Iterable[tuple[str, str]]:
    for a in attachments:
        url, sha = a.get("url"), a.get("sha256")
        url, sha = url if isinstance(url, str) else None, sha if isinstance(sha, str) else None
        if ref := attachment_ref(url, sha, default_bucket):
            yield ref


def _bytes(value: Any) -> bytes:
    """A record's payload: bytes, so base64 in its JSON (as msgspec writes them)."""
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        return value.encode()


def chat_frames_of(family: Family, address: str) -> Callable[[Frame], bool]:
    """Whether a frame of ``address``'s chat history is the family's."""

    def ours(frame: Frame) -> bool:
        if frame.kind == "message":
            return f"chat:{chat_message_id(address, frame.key)}" in family.provider_ids
        if frame.kind == "reply":
            return frame.key in family.reply_ids
        return frame.key in family.conversations

    return ours
