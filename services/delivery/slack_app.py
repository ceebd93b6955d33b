"""Slack endpoints in app mode (``channel`` set): offers posted with the Web API, then kept up
to date in place.

Per (conversation, endpoint, agent) there is one message: the offer (or an assignment) is
posted with ``chat.postMessage`` and its ``(channel, ts)`` remembered (``slack_refs``); later
notices about that conversation redraw it with ``chat.update`` ("Accepted by Ava",
"Declined", "Expired", "Resolved"), and a new customer message is posted in its thread, where
the agent answers. Each of these posts is also kept as an ``Erasable`` for a while after its
message's last state (``slack_refs``): a ``customer.erased`` notice deletes the erased family's
thread posts (``chat.delete``: the customer's words) and redraws their messages as ``[erased]``
(``services.delivery.erasure``), the channel still showing a conversation was there. Notices of
one conversation are handled one at a time, in the order the delivery service hands them over,
so an update never overtakes the post it updates, and nothing queued before an erasure posts
or redraws after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from events import subjects
from services.bus.errors import NATS_ERRORS
from services.delivery import erasure, slack_blocks
from services.delivery.settings import Endpoint
from services.delivery.slack_api import SlackApi, SlackResult
from services.delivery.slack_refs import Erasable, MessageRef, SlackRefs, keep_for

log = structlog.get_logger(__name__)

NOTHING_TO_UPDATE = SlackResult(True, False, None, "")
# chat.update's and chat.delete's answer for a message deleted in Slack meanwhile: nothing left to erase.
GONE = ": message_not_found"


class _Turn:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class SlackApp:
    def __init__(
        self,
        api: SlackApi,
        js: JetStreamContext,
        slack_user_of: Callable[[str], str | None],
        message_days: int = 0,
    ) -> None:
        self.api = api
        self.js = js
        self.slack_user_of = slack_user_of  # agent id -> Slack user id (for "dm")
        # [retention] message_days, when longer than the default (runners -> DeliveryService -> Senders).
        self.keep_for = keep_for(message_days)
        self._refs: SlackRefs | None = None
        # One notice at a time per (endpoint, conversation), in the order they arrive.
        self._turns: dict[tuple[str, str], _Turn] = {}

    async def refs(self) -> SlackRefs:
        if self._refs is None:
            kv: KeyValue = await self.js.key_value(subjects.STATE_BUCKET)
            self._refs = SlackRefs(kv, js=self.js, keep_for=self.keep_for)
        return self._refs

    @contextlib.asynccontextmanager
    async def _turn(self, endpoint_id: str, cid: str) -> AsyncIterator[None]:
        key = (endpoint_id, cid)
        turn = self._turns.setdefault(key, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if turn.users == 0:
                self._turns.pop(key, None)

    async def send(self, endpoint_id: str, endpoint: Endpoint, body: dict[str, Any]) -> SlackResult:
        cid = str(body.get("conversation", {}).get("id", ""))
        try:
            if body.get("notice") == erasure.NOTICE:
                return await self._erase(endpoint_id, body)
            async with self._turn(endpoint_id, cid):
                return await self._send(endpoint_id, endpoint, body)
        except NATS_ERRORS as err:
            # The message may be posted but not remembered: a retry posts it again (at least once).
            log.warning("slack.refs_unavailable", conversation_id=cid, endpoint_id=endpoint_id, error=repr(err))
            return SlackResult(False, True, None, f"NATS: {type(err).__name__}")

    async def _erase(self, endpoint_id: str, body: dict[str, Any]) -> SlackResult:
        """Delete the thread posts and redraw as ``[erased]`` the messages of the erased family's
        conversations on this endpoint, dropping each reference once done (a retry does the
        rest; a redelivery finds nothing left)."""
        refs = await self.refs()
        refused: SlackResult | None = None
        for cid in (str(c) for c in body.get("conversation_ids", [])):
            # In turn with the conversation's other notices: one queued before cannot undo it.
            async with self._turn(endpoint_id, cid):
                await refs.mark_erased(cid, endpoint_id)  # a notice retried later posts nothing of theirs
                result = await self._erase_conversation(refs, endpoint_id, cid)
            if not result.ok:
                log.info(
                    "slack.erase_failed",
                    endpoint_id=endpoint_id,
                    customer_id=body.get("customer_id"),
                    conversation_id=cid,
                    error=result.error,
                )
                if result.retryable:
                    return result  # Slack asked for a pause: the retry goes on from here
                refused = result  # the others still go
        return refused or NOTHING_TO_UPDATE

    async def _erase_conversation(self, refs: SlackRefs, endpoint_id: str, cid: str) -> SlackResult:
        posts = await refs.erasables(cid, endpoint_id)
        refused: SlackResult | None = None
        # The customer's words in the thread: deleted (the bot's own posts).
        text, blocks = erasure.erased_message()
        for post in (p for p in posts if p.in_thread):
            result = await self.api.call("chat.delete", {"channel": post.channel, "ts": post.ts})
            if not result.ok and not result.retryable and not result.error.endswith(GONE):
                # Refused for good (compliance exports on: compliance_exports_prevent_deletion):
                # at least its words go from what the channel shows.
                redrawn = await self.api.update(post.channel, post.ts, text, blocks)
                result = redrawn if redrawn.ok or redrawn.retryable else result
            if result.ok or result.error.endswith(GONE):
                await refs.forget_erasable(post)
            elif result.retryable:
                return result
            else:
                refused = result
        # The messages themselves: redrawn, so the channel still shows a conversation was there
        # (and its agents' own replies in the thread keep their parent).
        live = await refs.of_conversation_anyone(cid, endpoint_id)
        parents = {(p.channel, p.ts) for p in posts if not p.in_thread} | {(r.channel, r.ts) for r in live}
        for channel, ts in sorted(parents):
            result = await self.api.update(channel, ts, text, blocks)
            if not result.ok and not result.error.endswith(GONE):
                if result.retryable:
                    return result
                refused = result
                continue
            for ref in (r for r in live if (r.channel, r.ts) == (channel, ts)):
                await refs.forget(ref)
            for post in (p for p in posts if (p.channel, p.ts) == (channel, ts)):
                await refs.forget_erasable(post)
        return refused or NOTHING_TO_UPDATE

    async def _send(self, endpoint_id: str, endpoint: Endpoint, body: dict[str, Any]) -> SlackResult:
        kind = str(body.get("notice", ""))
        cid = str(body.get("conversation", {}).get("id", ""))
        agent_id = str(body.get("agent_id", ""))
        bound = log.bind(conversation_id=cid, agent_id=agent_id, endpoint_id=endpoint_id, notice=kind)
        refs = await self.refs()
        if await refs.erased(cid, endpoint_id):
            # Sent (or retried) after its customer's erasure: it would bring their words back.
            bound.info("slack.after_erasure", done="nothing posted or redrawn")
            return NOTHING_TO_UPDATE
        ref = await refs.of_conversation(cid, endpoint_id, agent_id)
        if kind == "message":
            if ref is not None:
                text, blocks = slack_blocks.thread_message(body)
                result = await self.api.post_message(ref.channel, text, blocks, thread_ts=ref.ts)
                if result.ok and result.data.get("ts"):
                    channel = str(result.data.get("channel") or ref.channel)
                    post = Erasable(
                        conversation_id=cid,
                        endpoint_id=endpoint_id,
                        channel=channel,
                        parent_ts=ref.ts,
                        ts=str(result.data["ts"]),
                    )
                    await refs.keep_erasable(post)
                return result
            if kind not in endpoint.notices:
                return NOTHING_TO_UPDATE
        elif ref is not None and kind != "offer":
            text, blocks = slack_blocks.conversation_message(body)
            result = await self.api.update(ref.channel, ref.ts, text, blocks)
            if result.ok and kind in slack_blocks.FINAL:
                await refs.forget(ref)
                await refs.renew_erasables(ref)  # an erasure reaches them for keep_for from now
            # Once per notice: at debug when it went (a refusal is said at info).
            (bound.debug if result.ok else bound.info)("slack.updated", ok=result.ok, error=result.error)
            return result
        elif kind not in ("offer", "assigned") or kind not in endpoint.notices:
            return NOTHING_TO_UPDATE  # nothing posted to update (or not wanted as a new message)
        channel = endpoint.channel
        if channel == "dm":
            user = self.slack_user_of(agent_id)
            if not user:
                return SlackResult(False, False, None, f"agent {agent_id} has no Slack user in [slack] users")
            channel = user
        text, blocks = slack_blocks.conversation_message(body)
        result = await self.api.post_message(channel, text, blocks)
        if not result.ok:
            return result
        posted_in, ts = str(result.data.get("channel") or channel), str(result.data.get("ts") or "")
        if ts and kind in ("offer", "assigned"):
            if ref is not None:  # offered again: the new message is the one to keep current
                await refs.forget(ref)
                await refs.renew_erasables(ref)
            customer_id = str(body.get("conversation", {}).get("customer_id", ""))
            await refs.keep_erasable(
                Erasable(conversation_id=cid, endpoint_id=endpoint_id, channel=posted_in, parent_ts=ts, ts=ts)
            )
            await refs.save(
                MessageRef(
                    conversation_id=cid,
                    customer_id=customer_id,
                    agent_id=agent_id,
                    endpoint_id=endpoint_id,
                    channel=posted_in,
                    ts=ts,
                )
            )
        bound.debug("slack.posted", channel=posted_in)  # once per notice
        return result
