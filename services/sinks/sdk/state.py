"""A sink's own KV bucket (``rd_sink_<name>``): its position on the log and the mapping
between conversations and helpdesk tickets.

Keys (all written by the sink only):

- ``position``: the last ``RD_EVENTS`` sequence handled (the next run resumes after it);
- ``conv.<conversation id>``: the ``Link`` (ticket id, customer, requester id);
- ``ticket.<ticket id>``: the conversation id (webhooks name the ticket);
- ``synced.<ticket id>.<message or reply id>``: the helpdesk comment posted for it (no second
  comment);
- ``ours.<ticket id>.<comment id>``: a comment the sink posted (never sent back to the customer);
- ``posting.<ticket id>.<body hash>``: set while a comment is being posted (``pending``) and
  kept for ``OURS_TTL`` seconds after (its expiry time), so a webhook that arrives before the
  post returns, or about a copy of the comment the helpdesk stored although its answer timed
  out, is still recognised as ours;
- ``relayed.<ticket id>.<comment id>``: a helpdesk comment already sent to the customer (the
  reply id), or ``NOT_SENT``: refused for good (not written by the agent holding the
  conversation), so it is not sent later when its author comes to hold the conversation;
- ``ends.<ticket id>``: when the ticket's resolved conversation's link lapses (``link_ends``);
- ``parked.<sequence>``: a log event the sink could not sync (``ParkedEvent``).

What goes by itself (JetStream per-message TTL, ``events.kv_expiry``): a ``posting.*`` marker
``OURS_TTL`` (and a minute) after its post returned; a removed key's marker after
``MARKER_TTL``; a conversation's ``conv.*`` and ``ticket.*`` ``LINK_KEPT`` after it was resolved
(``link_ends``: a resolved conversation never opens again, Relaydesk refuses a reply to it, and a
webhook about its ticket is then "not a Relaydesk ticket"), and with it the ticket's
``synced.``, ``ours.`` and ``relayed.`` keys, ``ITEM_GRACE`` later (while the link is there, a
Freshdesk webhook reads every entry of the ticket again: without them it would send the agent's
old replies to the customer a second time); one written after the resolution gets the same end
(``ends.<ticket>``). What stays: ``position``, parked events (an operator's), a customer's
helpdesk user, the links and per-comment keys of open conversations (however long they stay
open), and the per-comment keys an older version wrote without the ticket in their name
(``synced.<id>``, ``ours.<id>``, ``relayed.<id>``): still read when the ticket's own key is
missing, so an upgrade sends no old comment again, but nothing tells which ticket they belong
to. A sink that passes no ``ticket`` keeps that layout.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from events.kv import bucket_keys
from events.kv_expiry import purge_expiring, put_expiring


class Link(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation and its helpdesk ticket."""

    conversation_id: str
    customer_id: str
    ticket_id: str
    requester_id: str = ""


class ParkedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A log event a sink could not sync, kept for an operator (``relaydesk sink NAME --retry-parked``)."""

    seq: int
    subject: str
    type: str
    error: str
    parked_at: datetime
    auth: bool = False  # parked because the helpdesk refused the sink's credentials


# How long (s) a resolved conversation's link is kept: Zendesk closes a solved ticket within 28
# days at most (then it takes no comment), a bounce's DeliveryFailed comes within days, and an
# operator has that long to `--retry-parked` an event of it.
LINK_KEPT = 30 * 86400.0
# How long the marker of a removed key stays (a purge leaves one, for good without a TTL).
MARKER_TTL = 3600.0
# How much longer (s) than its link a ticket's per-comment keys are kept: gone first, the link
# turns a webhook about the ticket away before it could read an entry as new.
ITEM_GRACE = 3600.0
PER_COMMENT = ("synced", "ours", "relayed")  # the keys named after a message or a comment

# How long (s) after a post returned a comment with the same body on the same ticket is still
# taken for the sink's own (a duplicate the helpdesk stored while our call timed out).
OURS_TTL = 600.0
PENDING = b"pending"
NOT_SENT = "not-sent"  # relayed.<comment id>: refused, never sent (see the module docstring)


def bucket_name(sink: str) -> str:
    return f"rd_sink_{sink}"


def body_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()[:24]


class SinkState:
    def __init__(self, kv: KeyValue, js: JetStreamContext, bucket: str) -> None:
        self.kv = kv
        self.js = js
        self.bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext, sink: str, *, replicas: int = 1) -> SinkState:
        bucket = bucket_name(sink)
        try:
            kv = await js.key_value(bucket)
        except (BucketNotFoundError, NotFoundError):
            kv = await js.create_key_value(
                KeyValueConfig(bucket=bucket, history=1, replicas=replicas, description=f"Relaydesk sink {sink}")
            )
        return cls(kv, js, bucket)

    # -- plain values ------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            return None
        return entry.value if entry.value else None

    async def put(self, key: str, value: bytes | str) -> None:
        await self.kv.put(key, value.encode() if isinstance(value, str) else value)

    async def create(self, key: str, value: bytes | str) -> bool:
        """Set ``key`` unless it is set already; True if this call set it."""
        try:
            await self.kv.update(key, value.encode() if isinstance(value, str) else value, last=0)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def put_expiring(self, key: str, value: bytes | str, ttl: float) -> None:
        """``put`` of a value the server removes ``ttl`` seconds after."""
        data = value.encode() if isinstance(value, str) else value
        await put_expiring(self.js, self.bucket, key, data, ttl)

    async def delete(self, key: str) -> None:
        """Remove ``key``; its marker lapses after ``MARKER_TTL`` (no sink key is create-only)."""
        try:
            await purge_expiring(self.kv, self.bucket, key, MARKER_TTL)
        except (KeyNotFoundError, NotFoundError):
            return

    async def keys(self, prefix: str) -> list[str]:
        return await bucket_keys(self.js, self.bucket, prefix + ">")

    # -- position -------------------------------------------------------------------------------

    async def position(self) -> int | None:
        raw = await self.get("position")
        return int(raw) if raw else None

    async def save_position(self, seq: int) -> None:
        await self.put("position", str(seq))

    # -- links ------------------------------------------------------------------------------------

    async def link(self, conversation_id: str) -> Link | None:
        raw = await self.get(f"conv.{conversation_id}")
        return msgspec.json.decode(raw, type=Link) if raw else None

    async def conversation_of(self, ticket_id: str) -> Link | None:
        raw = await self.get(f"ticket.{ticket_id}")
        return await self.link(raw.decode()) if raw else None

    async def save_link(self, link: Link) -> None:
        await self.put(f"ticket.{link.ticket_id}", link.conversation_id)
        await self.put(f"conv.{link.conversation_id}", msgspec.json.encode(link))

    async def link_ends(self, conversation_id: str) -> bool:
        """The conversation is resolved: its link (both keys) lapses ``LINK_KEPT`` seconds from
        now, its ticket's per-comment keys ``ITEM_GRACE`` after. False if it has no link (never
        synced, or it lapsed already)."""
        link = await self.link(conversation_id)
        if link is None:
            return False
        ticket = link.ticket_id
        # First the end, so a key written while the others are being given theirs gets one too.
        until = time.time() + LINK_KEPT
        await self.put_expiring(f"ends.{ticket}", f"{until:.0f}", LINK_KEPT + ITEM_GRACE)
        for kind in PER_COMMENT:
            for key in await self.keys(f"{kind}.{ticket}."):
                value = await self.get(key)
                if value is not None:
                    await self.put_expiring(key, value, LINK_KEPT + ITEM_GRACE)
        # The ticket first: a webhook about it finds no conversation before the conversation goes.
        await self.put_expiring(f"ticket.{ticket}", link.conversation_id, LINK_KEPT)
        await self.put_expiring(f"conv.{link.conversation_id}", msgspec.json.encode(link), LINK_KEPT)
        return True

    async def _item(self, kind: str, ticket: str, item_id: str) -> bytes | None:
        """A per-comment key: the ticket's own, else the name an older version wrote it under."""
        if ticket:
            found = await self.get(f"{kind}.{ticket}.{item_id}")
            if found is not None:
                return found
        return await self.get(f"{kind}.{item_id}")

    async def _put_item(self, kind: str, ticket: str, item_id: str, value: str) -> None:
        """Write a per-comment key under its ticket; once the ticket's conversation is resolved,
        with the end its other keys were given (``link_ends``)."""
        if not ticket:
            await self.put(f"{kind}.{item_id}", value)  # a sink that names no ticket: kept for good
            return
        key = f"{kind}.{ticket}.{item_id}"
        ends = await self.get(f"ends.{ticket}")
        if ends is None:
            await self.put(key, value)
            return
        try:
            left = float(ends) - time.time()
        except ValueError:
            left = LINK_KEPT
        await self.put_expiring(key, value, max(left, 0.0) + ITEM_GRACE)

    # -- comments -----------------------------------------------------------------------------------

    async def synced(self, item_id: str, *, ticket: str = "") -> bool:
        return await self._item("synced", ticket, item_id) is not None

    async def mark_synced(self, item_id: str, comment_id: str, *, ticket: str = "") -> None:
        await self._put_item("synced", ticket, item_id, comment_id or "-")

    async def posting(self, ticket_id: str, text: str) -> bool:
        """Mark a post of ``text`` on the ticket as in flight; True if an earlier attempt's
        marker was there already (its comment may exist although its answer never came)."""
        key = f"posting.{ticket_id}.{body_hash(text)}"
        earlier = await self.get(key)
        await self.put(key, PENDING)
        return earlier is not None

    async def posted(self, ticket_id: str, text: str, comment_id: str, *, now: float | None = None) -> None:
        """The post returned: remember its id; the body marker stays for ``OURS_TTL`` seconds
        (a copy stored by a timed-out attempt is ours too), then goes: an agent may later write
        the same words in the helpdesk, and those must reach the customer."""
        if comment_id:
            await self._put_item("ours", ticket_id, comment_id, ticket_id)
        expires = (time.time() if now is None else now) + OURS_TTL
        # The server removes it a minute after it stops counting (is_ours reads the time in it).
        await self.put_expiring(f"posting.{ticket_id}.{body_hash(text)}", f"{expires:.0f}", OURS_TTL + 60)

    async def is_ours(self, ticket_id: str, comment_id: str, text: str, *, now: float | None = None) -> bool:
        """A comment the sink posted itself: by id, or by body while its post is in flight and
        for ``OURS_TTL`` seconds after it returned."""
        if comment_id and await self._item("ours", ticket_id, comment_id) is not None:
            return True
        key = f"posting.{ticket_id}.{body_hash(text)}"
        marker = await self.get(key)
        if marker is None:
            return False
        if marker != PENDING:
            try:
                expired = float(marker) <= (time.time() if now is None else now)
            except ValueError:
                expired = False
            if expired:
                await self.delete(key)
                return False
        if comment_id:
            await self._put_item("ours", ticket_id, comment_id, ticket_id)
        return True

    async def adoptable(self, comment_id: str, *, ticket: str = "") -> bool:
        """A comment with our body that no earlier post of ours claimed."""
        return bool(comment_id) and await self._item("ours", ticket, comment_id) is None

    async def relayed(self, comment_id: str, *, ticket: str = "") -> str | None:
        raw = await self._item("relayed", ticket, comment_id)
        return raw.decode() if raw else None

    async def mark_relayed(self, comment_id: str, reply_id: str, *, ticket: str = "") -> None:
        await self._put_item("relayed", ticket, comment_id, reply_id)

    # -- parked ------------------------------------------------------------------------------------

    async def park(self, record: ParkedEvent) -> None:
        await self.put(f"parked.{record.seq}", msgspec.json.encode(record))

    async def parked(self) -> list[ParkedEvent]:
        out = []
        for key in await self.keys("parked."):
            raw = await self.get(key)
            if raw:
                out.append(msgspec.json.decode(raw, type=ParkedEvent))
        return sorted(out, key=lambda r: r.seq)

    async def unpark(self, seq: int) -> None:
        await self.delete(f"parked.{seq}")
