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
"""

from __future__ import annotations

import re

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from events.kv_expiry import purge_expiring
from events.subjects import STATE_BUCKET

PREFIX = "delivery.slack"
MARKER_TTL = 3600.0  # seconds a removed reference's marker stays (then the key is gone)


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


_decoder = msgspec.json.Decoder(MessageRef)


class SlackRefs:
    def __init__(self, kv: KeyValue, bucket: str = STATE_BUCKET) -> None:
        self.kv = kv
        self.bucket = bucket  # kv's name: nats-py keeps it only in a private attribute

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

    async def of_conversation_anyone(self, conversation_id: str, endpoint_id: str) -> list[MessageRef]:
        """Every reference of the conversation's messages on this endpoint, whichever agent's
        (an erasure redraws them all)."""
        watcher = await self.kv.watch(f"{PREFIX}.cv.{conversation_id}.{endpoint_id}.*", ignore_deletes=True)
        out = []
        try:
            # The stored values come first; None says there are no more (no live updates wanted).
            while (entry := await watcher.updates(timeout=5.0)) is not None:  # type: ignore[no-untyped-call]
                if entry.value:
                    out.append(_decoder.decode(entry.value))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return out

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
