"""Crypto-shredding: a customer's personal data in the log is sealed with the customer's own key.

``RD_EVENTS`` is append-only and kept forever, so personal data cannot be deleted from it. It is
encrypted instead, field by field, with a random 256-bit data key per customer (AES-256-GCM,
a random 96-bit nonce per value, the customer id and the field name as associated data). The
keys live in the ``RD_KEYS`` stream (``rd.keys.<customer>``, one message per subject), which
allows deletes: destroying a customer's key (a secure erase, which overwrites the bytes on
disk) makes every copy of their personal data unreadable while the log stays intact.

A sealed string holds the envelope ``rdenc1:<base64url(nonce || ciphertext || tag)>``. Readers
open envelopes transparently; a value whose key is gone reads as ``ERASED`` (``[erased]``);
a value that is not an envelope (a log written before encryption, or with it turned off)
passes through unchanged. Routing data (ids, channel, language, skills, tiers, flags) stays
clear: the router never needs a key.

Personal fields (``PERSONAL_FIELDS``):

=========================== =============================================================
event                       sealed fields
=========================== =============================================================
CustomerCreated             identity (``<kind>:<address>``)
IdentityLinked              identity
IdentityUnlinked            identity, reason
CustomerProfileUpdated      crm_id, name
ConversationOpened          contact
MessageReceived             text; attachments' name and url; metadata values, except the
                            technical keys in ``CLEAR_METADATA`` (platform, auto, page_id…)
ReplyRequested              text
NoteAdded                   text (an internal note)
DeliveryFailed              reason (providers echo addresses in their errors)
ConversationTransferred     note
ConversationEscalated       reason
DeliverReply (RD_OUTBOUND)  contact, text, metadata values (as MessageReceived)
=========================== =============================================================

Retention (``[retention] message_days``, off by default): message bodies (the ``bodies`` of
``PERSONAL_FIELDS``: MessageReceived, ReplyRequested and NoteAdded ``text``) are sealed instead with the
customer's key of the event's day, ``rd.keys.<customer>.d<yyyymmdd>``, in the envelope
``rdenc1:d<yyyymmdd>:<base64url>``. A sweep (``services/retention.py``) erases day keys past
retention; such bodies read as ``EXPIRED`` (``[expired]``). Erasing the customer erases their
day keys too (an erased customer's bodies read ``[erased]``).

Work-queue messages (``DeliverReply``) are removed from disk when acknowledged, not erased,
so they are sealed too (``seal_reply`` / ``open_reply``). Reading a ``CustomerErased`` event
makes the cipher forget the erased customers' cached keys. A destroyed key leaves a tombstone
on its subject: a destroyed customer never gets a new key, and sealing for them fails with
``KeyDestroyed`` rather than writing readable data about an erased person.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from events.personal.cipher import (
        CLEAR_METADATA,
        ENVELOPE,
        ERASED,
        EXPIRED,
        PERSONAL_FIELDS,
        Fields,
        PersonalDataCipher,
        clear_personal_fields,
    )
    from events.personal.keys import (
        KEYS_ALL,
        KEYS_STREAM,
        CustomerKeys,
        KeyDestroyed,
        KeyRecord,
        day_subject,
        key_subject,
        system_key_subject,
    )

_FROM_KEYS = frozenset(
    {
        "KEYS_ALL",
        "KEYS_STREAM",
        "CustomerKeys",
        "KeyDestroyed",
        "KeyRecord",
        "day_subject",
        "key_subject",
        "system_key_subject",
    }
)


def __getattr__(name: str) -> Any:
    # Loaded when first asked for: a module that only needs a light part of this package
    # (``fields``, ``box``: the rebuild's writer process, through ``events.digests``) does not
    # pull in the cipher's keys and with them nats-py.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from events.personal import cipher, keys

    value = getattr(keys if name in _FROM_KEYS else cipher, name)
    globals()[name] = value  # asked once: later lookups find it without this function
    return value


__all__ = [
    "CLEAR_METADATA",
    "ENVELOPE",
    "ERASED",
    "EXPIRED",
    "KEYS_ALL",
    "KEYS_STREAM",
    "PERSONAL_FIELDS",
    "CustomerKeys",
    "Fields",
    "KeyDestroyed",
    "KeyRecord",
    "PersonalDataCipher",
    "clear_personal_fields",
    "day_subject",
    "key_subject",
    "system_key_subject",
]
