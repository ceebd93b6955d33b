"""Bounces of our own replies are reported as their outcome; intake records ``DeliveryFailed``.

Sending: after the SMTP server accepted a reply, ``SentReplies.remember`` keeps
``email.sent.<id>`` in the ``rd_state`` KV bucket: the reply, its customer and conversation
(``<id>`` is the ``<id>`` of our Message-ID ``rd.<id>@<domain>``), for ``SENT_KEPT`` (a
per-message TTL, ``events.kv_expiry``): mail servers give up on a message within days (RFC
5321 asks for 4-5), and kept for good each reply left ~200 bytes in ``rd_state`` for as long
as the deployment ran (found by the long-run audit). A bounce arriving later than that is
taken as mail from the customer, as one of a reply sent before entries existed.

Receiving: a bounce whose bounced Message-ID is ``rd.<id>@…`` with an entry, and whose
delivery-status report says ``Action: failed`` (or that has no report at all), becomes
``bounce_report``: a ``ReplyOutcomeReported(outcome="bounced", reason="bounced: <status>
(<diagnostic>)")`` published on ``rd.inbound.email`` with ``Nats-Msg-Id:
email.bounce:<reply_id>`` (the connector never writes the log). Intake appends
``DeliveryFailed`` on the reply's conversation once: it reads the conversation first, so a
bounce delivered again (minutes or days later, past any dedupe window) appends nothing.

Only the customer's copy fails the reply: the entry keeps a hash of the address the reply was
sent To (``to_hash``), and a report whose failed recipients (``Final-Recipient`` /
``Original-Recipient``) are all someone else (a Cc'd copy refused) is ``CopyBounce``: logged
and counted by the connector, no outcome. Entries written before ``to_hash`` existed, and
reports that do not name who failed, are taken as about the customer (as before).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from events import subjects
from events.kv_expiry import put_expiring
from events.model import DeliverReply, ReplyOutcomeReported

from .automatic import DeliveryReport, status_blocks
from .lenient import forgiven

KEY_PREFIX = "email.sent."
SENT_KEPT = 14 * 24 * 3600.0  # seconds an entry is kept (then the server removes it)
_OUR_ID = re.compile(r"^<?rd\.([A-Za-z0-9._-]{1,100})@[^@>\s]+>?$")
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class SentReply(msgspec.Struct, frozen=True, kw_only=True):
    reply_id: str
    customer_id: str
    conversation_id: str
    sent_at: datetime
    # ``recipient_hash`` of the customer's address (To): a hash, so ``rd_state`` holds no
    # address an erasure would have to find. None in entries written before it existed.
    to_hash: str | None = None


def recipient_hash(reply_id: str, address: str) -> str:
    """The customer's address as a ``SentReply`` keeps it (salted with the reply, so two
    entries for one person do not look alike)."""
    normal = address.strip().strip("<>").lower()
    return hashlib.sha256(f"{reply_id}\n{normal}".encode()).hexdigest()[:32]


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

    async def remember(self, reply: DeliverReply, message_id: str, at: datetime, *, to: str) -> None:
        """``to``: the address the reply was sent To (the customer; copies are Cc)."""
        local = our_id(message_id)
        if local is None:
            raise ValueError("not one of our Message-IDs")
        entry = SentReply(
            reply_id=reply.reply_id,
            customer_id=reply.customer_id,
            conversation_id=reply.conversation_id,
            sent_at=at,
            to_hash=recipient_hash(reply.reply_id, to),
        )
        async with asyncio.timeout(self.timeout):
            await put_expiring(self.js, subjects.STATE_BUCKET, sent_key(local), msgspec.json.encode(entry), SENT_KEPT)

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


# -- who a delivery-status report says failed ---------------------------------------------------


@dataclass(frozen=True)
class FailedRecipient:
    """One ``Action: failed`` block of a delivery-status report: the addresses it names
    (``Final-Recipient``, ``Original-Recipient``; lower-case, possibly none) and its fields."""

    addresses: tuple[str, ...]
    report: DeliveryReport


@dataclass(frozen=True)
class CopyBounce:
    """The report names failed recipients, and the customer is not among them: a Cc'd copy
    was refused, the reply reached the customer."""

    failed: int  # how many failed blocks


def _field(block: Message, name: str) -> str:
    value = block.get(name)
    return " ".join(str(value).split()) if value is not None else ""


def _report_address(value: str) -> str | None:
    """``rfc822; bob@example.com`` (RFC 3464; ``utf-8;`` RFC 6533) → ``bob@example.com``."""
    _, _, address = value.partition(";")
    address = (address or value).strip().strip("<>").strip().lower()
    return address if "@" in address else None


def failed_recipients(raw: bytes) -> list[FailedRecipient]:
    """The ``Action: failed`` blocks of ``raw``'s ``message/delivery-status`` part (none when it
    has no such part). ``parse.delivery_report`` says what the first failure was; this says
    whom each failure was about."""
    try:
        blocks = status_blocks(email.message_from_bytes(raw, policy=email.policy.compat32))
    except Exception as err:  # what the parser could not read names nobody: the caller falls back
        forgiven("failed_recipients", err)  # said (the part, the error's type) and counted
        return []
    out: list[FailedRecipient] = []
    for block in blocks:
        if _field(block, "Action").lower() != "failed":
            continue
        named = (_report_address(_field(block, h)) for h in ("Final-Recipient", "Original-Recipient"))
        addresses = tuple(dict.fromkeys(a for a in named if a))
        report = DeliveryReport(
            action="failed",
            status=_field(block, "Status")[:40],
            diagnostic=_field(block, "Diagnostic-Code")[:500],
        )
        out.append(FailedRecipient(addresses, report))
    return out


def customer_failure(
    sent: SentReply, failed: list[FailedRecipient], report: DeliveryReport | None
) -> DeliveryReport | CopyBounce | None:
    """What a bounce of ``sent`` says about the customer's copy: the failed block naming the
    customer (its fields make the reason), ``CopyBounce`` when every failed block names
    someone else, else ``report`` (an entry without ``to_hash``, a report that names no
    failed recipient or no recipient at all: taken as the customer's, as before)."""
    if sent.to_hash is None or not failed:
        return report
    for block in failed:
        if any(recipient_hash(sent.reply_id, a) == sent.to_hash for a in block.addresses):
            return block.report
    if all(block.addresses for block in failed):
        return CopyBounce(failed=len(failed))
    return report
