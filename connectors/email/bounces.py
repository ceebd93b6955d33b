"""Bounces of our own replies become ``DeliveryFailed`` on the reply's conversation.

Sending: after the SMTP server accepted a reply, ``SentReplies.remember`` keeps
``email.sent.<id>`` in the ``rd_state`` KV bucket: the reply, its customer and conversation
(``<id>`` is the ``<id>`` of our Message-ID ``rd.<id>@<domain>``). No TTL: the bucket has
none and per-message TTLs need a bucket created for them; an entry is ~200 bytes.

Receiving: a bounce whose bounced Message-ID is ``rd.<id>@…`` with an entry, and whose
delivery-status report says ``Action: failed`` (or that has no report at all), is recorded
by ``record_bounce``: ``DeliveryFailed(reason="bounced: <status> (<diagnostic>)")`` with
``Nats-Msg-Id: bounce:<reply_id>``. The conversation is read first and the append is guarded
by its last sequence, so a bounce delivered again (minutes or days later) finds its
``DeliveryFailed`` and appends nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import datetime

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from events import subjects
from events.model import DeliverReply, DeliveryFailed
from events.store import Append, ConcurrencyError, EventStore, StoredEvent

KEY_PREFIX = "email.sent."
_OUR_ID = re.compile(r"^<?rd\.([A-Za-z0-9._-]{1,100})@[^@>\s]+>?$")
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class SentReply(msgspec.Struct, frozen=True, kw_only=True):
    reply_id: str
    customer_id: str
    conversation_id: str
    sent_at: datetime


def our_id(message_id: str | None) -> str | None:
    """The ``<id>`` of one of our Message-IDs (``rd.<id>@domain``, brackets optional)."""
    if not message_id:
        return None
    match = _OUR_ID.match(message_id.strip())
    return match.group(1) if match else None


def sent_key(local_id: str) -> str:
    """The KV key for ``rd.<local_id>@…``: the id itself when it is one plain token (the
    usual ``rep_…``), else ``x.<sha256>`` (dots and the like are not safe in a key)."""
    if _PLAIN.match(local_id):
        return KEY_PREFIX + local_id
    return KEY_PREFIX + "x." + hashlib.sha256(local_id.encode()).hexdigest()[:40]


def bounce_msg_id(reply_id: str) -> str:
    return f"bounce:{reply_id}"


class SentReplies:
    """``reply → (customer, conversation)`` for the replies this connector sent."""

    def __init__(self, js: JetStreamContext, timeout: float) -> None:
        self.js = js
        self.timeout = timeout
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.js.key_value(subjects.STATE_BUCKET)
        return self._kv

    async def remember(self, reply: DeliverReply, message_id: str, at: datetime) -> None:
        local = our_id(message_id)
        if local is None:
            raise ValueError("not one of our Message-IDs")
        entry = SentReply(
            reply_id=reply.reply_id, customer_id=reply.customer_id, conversation_id=reply.conversation_id, sent_at=at
        )
        async with asyncio.timeout(self.timeout):
            kv = await self._bucket()
            await kv.put(sent_key(local), msgspec.json.encode(entry))

    async def lookup(self, local_id: str) -> SentReply | None:
        async with asyncio.timeout(self.timeout):
            kv = await self._bucket()
            try:
                entry = await kv.get(sent_key(local_id))
            except KeyNotFoundError:
                return None
        if not entry.value:
            return None
        try:
            return msgspec.json.decode(entry.value, type=SentReply)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None


def _recorded(stored: list[StoredEvent], reply_id: str) -> int | None:
    for item in stored:
        event = item.event
        if isinstance(event, DeliveryFailed) and event.reply_id == reply_id and event.reason.startswith("bounced"):
            return item.seq
    return None


async def record_bounce(store: EventStore, sent: SentReply, reason: str, at: datetime) -> tuple[int, bool]:
    """Append the bounce's ``DeliveryFailed`` once; returns (its stream sequence, already
    recorded before). Raises NATS errors (the caller answers "try again later")."""
    subject = subjects.conversation(sent.customer_id, sent.conversation_id)
    event = DeliveryFailed(
        at=at,
        customer_id=sent.customer_id,
        conversation_id=sent.conversation_id,
        channel="email",
        reply_id=sent.reply_id,
        reason=reason,
    )
    for _ in range(5):
        stored = await store.read(subject)
        seen = _recorded(stored, sent.reply_id)
        if seen is not None:
            return seen, True
        last = stored[-1].seq if stored else 0
        try:
            # Guarded by the last sequence read: a 10071 whose last message carries our
            # msg id is resolved by the store as done; anything else appended meanwhile
            # means read again.
            seq = await store.append(Append(event, subject=subject, expected=last, msg_id=bounce_msg_id(sent.reply_id)))
        except ConcurrencyError:
            continue
        return seq, False
    raise ConcurrencyError(subject, None)
