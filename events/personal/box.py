"""One customer's key at work, and walking an event's personal values (see ``events.personal``).

The hot path of every sealed append and every read: kept to plain ``binascii`` and one pass
over the fields that ``Fields`` names, with no coroutine per value.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.model import Attachment

log = structlog.get_logger("events.personal.cipher")

ENVELOPE = "rdenc1:"
ERASED = "[erased]"
EXPIRED = "[expired]"  # a message body past [retention] message_days
NONCE_BYTES = 12

# MessageReceived / DeliverReply metadata that is technical, not personal, and stays clear.
CLEAR_METADATA: frozenset[str] = frozenset(
    {
        "platform",
        "kind",
        "auto",
        "auto_reason",
        "page_id",
        "phone_number_id",
        "html_only",
        "quote_stripped",
        "truncated",
        "attachments_dropped",
        "mime_defect",
        "last_customer_message_at",
    }
)


@dataclass(frozen=True)
class Fields:
    """Which fields of one event type are personal."""

    strings: tuple[str, ...] = ()
    attachments: bool = False
    metadata: bool = False
    # Message bodies among ``strings``: with ``[retention] message_days`` they are sealed with
    # the customer's key of the event's day instead, which the retention sweep destroys.
    bodies: tuple[str, ...] = ()


E = TypeVar("E", bound=msgspec.Struct)
Transform = Callable[[str, str], str]

_TO_URL = bytes.maketrans(b"+/", b"-_")
_FROM_URL = bytes.maketrans(b"-_", b"+/")
_PREFIX_LEN = len(ENVELOPE)
_META_NAMES: dict[str, str] = {}  # metadata key -> its field name in the associated data


class Box:
    """One customer's key (or day key) at work: seals and opens single values. ``aead`` None:
    the key is gone, and every envelope reads as ``gone``."""

    __slots__ = ("aad", "aead", "customer_id", "gone", "prefix", "skip", "tag")

    def __init__(self, aead: AESGCM | None, customer_id: str, day: str = "", gone: str = ERASED) -> None:
        self.aead = aead
        self.customer_id = customer_id
        self.prefix = customer_id.encode() + b"\x00"  # AAD: customer id, NUL, field name
        self.aad: dict[str, bytes] = {}  # field name -> its associated data, made once
        self.tag = ENVELOPE + (f"{day}:" if day else "")  # a day key's envelope names its day
        self.skip = len(self.tag)
        self.gone = gone  # what a value reads as without the key

    def _aad(self, field: str) -> bytes:
        aad = self.aad[field] = self.prefix + field.encode()
        return aad

    def seal(self, field: str, value: str) -> str:
        aead = self.aead
        assert aead is not None
        nonce = os.urandom(NONCE_BYTES)  # a fresh random nonce for every value
        sealed = aead.encrypt(nonce, value.encode(), self.aad.get(field) or self._aad(field))
        # base64url without padding: "=" only ever ends a base64 text, so deleting it is rstrip.
        return self.tag + binascii.b2a_base64(nonce + sealed, newline=False).translate(_TO_URL, b"=").decode("ascii")

    def open(self, field: str, value: str) -> str:
        aead = self.aead
        if aead is None:
            return self.gone
        try:
            raw = binascii.a2b_base64(value[self.skip :].encode("ascii").translate(_FROM_URL) + b"==")
            aad = self.aad.get(field) or self._aad(field)
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad).decode()
        except (InvalidTag, binascii.Error, ValueError, UnicodeError) as err:
            # Not readable with this customer's key: shown as erased.
            log.warning(
                "personal.unreadable_envelope", customer_id=self.customer_id, field=field, error=type(err).__name__
            )
            return ERASED


def _meta_name(key: str) -> str:
    name = _META_NAMES.get(key)
    if name is None:
        name = "metadata." + key
        if len(_META_NAMES) < 10_000:  # keys come from providers: a bounded cache
            _META_NAMES[key] = name
    return name


def apply(event: E, fields: Fields, change: Transform, *, only_envelopes: bool) -> E:
    """``event`` with ``change(field name, value)`` applied to each personal value (to each
    envelope, with ``only_envelopes``); the same object when nothing changes."""
    changes: dict[str, Any] = {}
    for name in fields.strings:
        value = getattr(event, name)
        if value and (not only_envelopes or value.startswith(ENVELOPE)):
            changes[name] = change(name, value)
    if fields.attachments:
        attachments: tuple[Attachment, ...] = getattr(event, "attachments", ())
        if attachments:
            out: list[Attachment] = []
            touched = False
            for a in attachments:
                file_name, url = a.name, a.url
                if file_name and (not only_envelopes or file_name.startswith(ENVELOPE)):
                    file_name = change("attachments.name", file_name)
                if url and (not only_envelopes or url.startswith(ENVELOPE)):
                    url = change("attachments.url", url)
                if file_name is not a.name or url is not a.url:
                    touched = True
                    a = msgspec.structs.replace(a, name=file_name, url=url)
                out.append(a)
            if touched:
                changes["attachments"] = tuple(out)
    if fields.metadata:
        metadata: dict[str, str] = getattr(event, "metadata", {})
        if metadata:
            changed: dict[str, str] | None = None
            for key, value in metadata.items():
                if value and key not in CLEAR_METADATA and (not only_envelopes or value.startswith(ENVELOPE)):
                    if changed is None:
                        changed = dict(metadata)
                    changed[key] = change(_meta_name(key), value)
            if changed is not None:
                changes["metadata"] = changed
    return msgspec.structs.replace(event, **changes) if changes else event


def clear_fields(event: E, fields: Fields) -> list[str]:
    """The personal fields of ``event`` that hold a value in clear (written before sealing
    existed, or with it turned off): what destroying the customer's key cannot make unreadable."""
    found: list[str] = []

    def note(name: str, value: str) -> str:
        if not value.startswith(ENVELOPE) and value not in (ERASED, EXPIRED):  # placeholders hold nothing
            found.append(name)
        return value

    apply(event, fields, note, only_envelopes=False)
    return found


def has_envelope(event: msgspec.Struct, fields: Fields) -> bool:
    for name in fields.strings:
        value = getattr(event, name)
        if value and value.startswith(ENVELOPE):
            return True
    if fields.attachments:
        for a in getattr(event, "attachments", ()):
            if (a.name and a.name.startswith(ENVELOPE)) or (a.url and a.url.startswith(ENVELOPE)):
                return True
    if fields.metadata:
        return any(v.startswith(ENVELOPE) for v in getattr(event, "metadata", {}).values())
    return False


def envelope_day(value: str | None) -> str:
    """``dYYYYMMDD`` of a day-key envelope (``rdenc1:dYYYYMMDD:…``), else ""."""
    if value and value.startswith(ENVELOPE) and value[_PREFIX_LEN + 9 : _PREFIX_LEN + 10] == ":":
        day = value[_PREFIX_LEN : _PREFIX_LEN + 9]
        if day[0] == "d" and day[1:].isdigit():
            return day
    return ""
