"""Where each conversation's Slack message is: ``(channel, ts)`` per (conversation, endpoint,
agent), so that an accept, a decline, an expiry or a resolve updates that message in place,
and a reply in its thread finds its conversation again.

Kept in the ``rd_state`` KV bucket under the delivery service's own ``delivery.`` prefix (its
NATS role may write there; the API's may read), two keys per message:

- ``delivery.slack.cv.<conversation>.<endpoint>.<agent>``: the reference (delivery: update it);
- ``delivery.slack.ts.<channel>.<ts>``: the same reference (API: a thread reply's conversation).

A reference holds ids only (no customer data: the erasure's own steps need not look here; the
delivery service's ``customer.erased`` notice redraws the messages it still points at, then drops
it: ``services.delivery.erasure``) and is removed once
the message reaches its last state (declined, expired, handed back, resolved): purged with a
marker that lapses after ``MARKER_TTL`` (``events.kv_expiry``), so nothing of it stays. A
plain delete left a marker per key for good: two messages in ``rd_state`` per Slack message
ever posted (found by the long-run audit).

What an erasure must reach outlives that: every post of a conversation that carries the
customer's words or contact (its message, and each customer message posted in its thread) is
also kept as an ``Erasable`` under ``delivery.slack.er.<conversation>.<endpoint>.<channel>.
<parent ts>.<ts>``, written with a TTL (``events.kv_expiry.put_expiring``) so it lapses by itself
``keep_for`` after it was written, renewed when its message reaches its last state: an erasure
within that time deletes the thread posts and redraws the message (``services.delivery.erasure``);
after it, the key is gone and so is the reach (the README says so). An erased conversation is
marked (``delivery.slack.erased.<conversation>.<endpoint>``, same lifetime) so that a notice
retried after the erasure posts nothing of theirs again.
"""

from __future__ import annotations

import re

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from events.kv_expiry import purge_expiring, put_expiring
from events.subjects import STATE_BUCKET

PREFIX = "delivery.slack"
MARKER_TTL = 3600.0  # seconds a removed reference's marker stays (then the key is gone)
DAY = 86400.0
# How long after its message's last state an erasure still reaches a post, unless [retention]
# message_days is longer (``keep_for``). A key per post for that long (ids, ~200 bytes): a
# month of posts in rd_state, not every post ever made.
ERASABLE_DAYS = 30


class MessageRef(msgspec.Struct, kw_only=True):
    conversation_id: str
    customer_id: str
    agent_id: str
    endpoint_id: str
    channel: str
    ts: str


def conversation_key(conversation_id: str, endpoint_id: str, agent_id: str) -> str:
    return f"{PREFIX}.cv.{conversation_id}.{endpoint_id}.{agent_id}"


_CHANNEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TS = re.compile(r"[0-9]{1,20}(\.[0-9]{1,12})?")


def is_thread(channel: str, ts: str) -> bool:
    """A Slack channel id and message ts as Slack makes them (``C0123ABC``, ``1700000000.000100``):
    anything else (a space, ``*``, ``>``, non-ASCII digits) cannot be a KV key, nor our thread."""
    return _CHANNEL.fullmatch(channel) is not None and _TS.fullmatch(ts) is not None


def thread_key(channel: str, ts: str) -> str:
    # Slack's ts is "<seconds>.<micros>": a dot would be a key level of its own.
    return f"{PREFIX}.ts.{channel}.{ts.replace('.', '_')}"


class Erasable(msgspec.Struct, kw_only=True):
    """A post of the app's in Slack that an erasure must reach (ids only)."""

    conversation_id: str
    endpoint_id: str
    channel: str
    parent_ts: str  # the conversation's message; == ts for that message itself
    ts: str

    @property
    def in_thread(self) -> bool:
        return self.ts != self.parent_ts


def erasable_key(post: Erasable) -> str:
    ts, parent = post.ts.replace(".", "_"), post.parent_ts.replace(".", "_")
    return f"{PREFIX}.er.{post.conversation_id}.{post.endpoint_id}.{post.channel}.{parent}.{ts}"


def erased_key(conversation_id: str, endpoint_id: str) -> str:
    return f"{PREFIX}.erased.{conversation_id}.{endpoint_id}"


def keep_for(message_days: int = 0) -> float:
    """Seconds an ``Erasable`` is kept: ``ERASABLE_DAYS``, or ``[retention] message_days`` when
    longer (the deployment keeps the customer's words that long itself: so may the erasure reach)."""
    return max(ERASABLE_DAYS, message_days) * DAY


_decoder = msgspec.json.Decoder(MessageRef)
_erasable = msgspec.json.Decoder(Erasable)


class SlackRefs:
    def __init__(
        self,
        kv: KeyValue,
        bucket: str = STATE_BUCKET,
        *,
        js: JetStreamContext | None = None,
        keep_for: float = ERASABLE_DAYS * DAY,
    ) -> None:
        self.kv = kv
        self.bucket = bucket  # kv's name: nats-py keeps it only in a private attribute
        self._js = js  # for the writes with a TTL; readers (the API's Slack routes) need none
        self.keep_for = keep_for

    @property
    def js(self) -> JetStreamContext:
        # Passed in, not read from nats-py's private KeyValue._js, which a release may rename.
        if self._js is None:
            raise RuntimeError("SlackRefs(js=...) is needed to keep erasable posts (writes with a TTL)")
        return self._js

    async def _get(self, key: str) -> MessageRef | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value:  # deleted
            return None
        return _decoder.decode(entry.value)

    async def of_conversation(self, conversation_id: str, endpoint_id: str, agent_id: str) -> MessageRef | None:
        return await self._get(conversation_key(conversation_id, endpoint_id, agent_id))

    async def _values(self, keys: str) -> list[bytes]:
        watcher = await self.kv.watch(keys, ignore_deletes=True)
        out = []
        try:
            # The stored values come first; None says there are no more (no live updates wanted).
            while (entry := await watcher.updates(timeout=5.0)) is not None:  # type: ignore[no-untyped-call]
                if entry.value:
                    out.append(entry.value)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return out

    async def of_conversation_anyone(self, conversation_id: str, endpoint_id: str) -> list[MessageRef]:
        """Every reference of the conversation's messages on this endpoint, whichever agent's
        (an erasure redraws them all)."""
        return [_decoder.decode(v) for v in await self._values(f"{PREFIX}.cv.{conversation_id}.{endpoint_id}.*")]

    # -- what an erasure must reach -------------------------------------------------------

    async def keep_erasable(self, post: Erasable) -> None:
        await put_expiring(self.js, self.bucket, erasable_key(post), msgspec.json.encode(post), self.keep_for)

    async def erasables(
        self, conversation_id: str, endpoint_id: str, parent: MessageRef | None = None
    ) -> list[Erasable]:
        """The conversation's posts on this endpoint (only ``parent``'s message and its thread)."""
        keys = f"{PREFIX}.er.{conversation_id}.{endpoint_id}.>"
        if parent is not None:
            keys = f"{PREFIX}.er.{conversation_id}.{endpoint_id}.{parent.channel}.{parent.ts.replace('.', '_')}.*"
        return [_erasable.decode(v) for v in await self._values(keys)]

    async def renew_erasables(self, ref: MessageRef) -> None:
        """Its message reached its last state: kept ``keep_for`` from now (a thread lasts)."""
        for post in await self.erasables(ref.conversation_id, ref.endpoint_id, ref):
            await self.keep_erasable(post)

    async def forget_erasable(self, post: Erasable) -> None:
        await purge_expiring(self.kv, self.bucket, erasable_key(post), MARKER_TTL)

    async def mark_erased(self, conversation_id: str, endpoint_id: str) -> None:
        # Empty: the key's presence is the fact (it holds no reference to anything in Slack).
        await put_expiring(self.js, self.bucket, erased_key(conversation_id, endpoint_id), b"", self.keep_for)

    async def erased(self, conversation_id: str, endpoint_id: str) -> bool:
        try:
            await self.kv.get(erased_key(conversation_id, endpoint_id))
        except (KeyNotFoundError, KeyDeletedError):  # never marked, or lapsed
            return False
        return True

    async def of_thread(self, channel: str, ts: str) -> MessageRef | None:
        if not is_thread(channel, ts):
            return None  # never a key we wrote (and no key at all)
        return await self._get(thread_key(channel, ts))

    async def save(self, ref: MessageRef) -> None:
        raw = msgspec.json.encode(ref)
        await self.kv.put(thread_key(ref.channel, ref.ts), raw)
        await self.kv.put(conversation_key(ref.conversation_id, ref.endpoint_id, ref.agent_id), raw)

    async def forget(self, ref: MessageRef) -> None:
        for key in (
            conversation_key(ref.conversation_id, ref.endpoint_id, ref.agent_id),
            thread_key(ref.channel, ref.ts),
        ):
            await purge_expiring(self.kv, self.bucket, key, MARKER_TTL)  # whether or not the key was there
