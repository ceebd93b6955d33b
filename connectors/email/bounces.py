"""Bounces of our own replies are reported as their outcome; intake records ``DeliveryFailed``.

Sending: after the SMTP server accepted a reply, ``SentReplies.remember`` keeps
``email.sent.<id>`` in the ``rd_state`` KV bucket: the reply, its customer and conversation
(``<id>`` is the ``<id>`` of our Message-ID ``rd.<id>@<domain>``). No TTL: the bucket has
none and per-message TTLs need a bucket created for them; an entry is ~200 bytes.

Receiving: a bounce whose bounced Message-ID is ``rd.<id>@…`` with an entry, and whose
delivery-status report says ``Action: failed`` (or that has no report at all), becomes
``bounce_report``: a ``ReplyOutcomeReported(outcome="bounced", reason="bounced: <status>
(<diagnostic>)")`` published on ``rd.inbound.email`` with ``Nats-Msg-Id:
email.bounce:<reply_id>`` (the connector never writes the log). Intake appends
``DeliveryFailed`` on the reply's conversation once: it reads the conversation first, so a
bounce delivered again (minutes or days later, past any dedupe window) appends nothing.
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
from events.model import DeliverReply, ReplyOutcomeReported

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


def bounce_report(sent: SentReply, reason: str, at: datetime) -> ReplyOutcomeReported:
    """The outcome report of a bounce of ``sent`` (``reason``: ``bounced: …``)."""
    return ReplyOutcomeReported(
        at=at,
        customer_id=sent.customer_id,
        conversation_id=sent.conversation_id,
        channel="email",
        reply_id=sent.reply_id,
        outcome="bounced",
        reason=reason,
    )
