"""Which fields of each event type are personal (``events.personal``): what the cipher seals,
what an erasure must reach, and what ``events.digests`` leaves out of an event's digest. Apart
from the cipher and its keys (no NATS here: the rebuild's writer process reads it)."""

from __future__ import annotations

import msgspec

from events.model import (
    ConversationEscalated,
    ConversationOpened,
    ConversationTransferred,
    CustomerCreated,
    CustomerProfileUpdated,
    DeliverReply,
    DeliveryFailed,
    IdentityLinked,
    IdentityUnlinked,
    MessageReceived,
    NoteAdded,
    ReplyRequested,
)
from events.personal.box import Fields

PERSONAL_FIELDS: dict[type[msgspec.Struct], Fields] = {
    CustomerCreated: Fields(strings=("identity",)),
    IdentityLinked: Fields(strings=("identity",)),
    IdentityUnlinked: Fields(strings=("identity", "reason")),
    CustomerProfileUpdated: Fields(strings=("crm_id", "name")),
    ConversationOpened: Fields(strings=("contact",), metadata=True),
    MessageReceived: Fields(strings=("text", "contact"), attachments=True, metadata=True, bodies=("text",)),
    ReplyRequested: Fields(strings=("text", "template_values"), attachments=True, bodies=("text",)),
    NoteAdded: Fields(strings=("text",), bodies=("text",)),
    DeliveryFailed: Fields(strings=("reason",)),
    ConversationTransferred: Fields(strings=("note",)),
    ConversationEscalated: Fields(strings=("reason",)),
    DeliverReply: Fields(strings=("contact", "text", "template_values"), attachments=True, metadata=True),
}
