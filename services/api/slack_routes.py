"""The Slack app's request URLs: ``POST /slack/interactions`` (the Accept / Decline / Resolve
buttons) and ``POST /slack/events`` (the Events API: an agent's reply in a conversation's
thread goes to the customer).

No bearer token: each request must carry Slack's signature (``services.delivery.slack_signing``)
made with ``[slack] signing_secret`` within five minutes, else 401. The Slack user acting is
mapped to an agent by ``[slack] users``; what that agent may do is what its agent token may do
(``services.api.auth.agent_refusal``), and the events are built by the same functions as the
API's commands (``services.api.commands``), with ``actor = "agent:<id>"``. A refusal is
answered to that user alone (``chat.postEphemeral``); nothing changes.

Slack retries an event it did not see answered within 3 s (``X-Slack-Retry-Num``) and a
click can arrive twice: each is claimed once in ``rd_idempotency`` (by ``event_id``, or by the
click's user, ``action_ts`` and button), so a retry does nothing; a reply's id is derived from
the ``event_id``, so even an unclaimed retry cannot send the customer the same reply twice
(``RD_OUTBOUND`` drops a second message with that id).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

import aiohttp
import msgspec
import structlog
from aiohttp import web
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from connectors.sdk.signatures import secret_list
from events import subjects
from events.model import LogEvent, ReplyRequested
from events.redact import redact_error
from events.skips import count_skip
from events.store import ConcurrencyError
from events.streams import IDEMPOTENCY_BUCKET
from router.state import ConversationView
from services.api import commands
from services.api.auth import agent_refusal
from services.api.common import ApiDeps, ApiError, json_error, ok
from services.api.reply_routing import ReplyRoute
from services.delivery import slack_blocks, slack_signing
from services.delivery.slack_api import SlackApi
from services.delivery.slack_refs import SlackRefs, is_thread

log = structlog.get_logger(__name__)

ACTION_COMMANDS = {slack_blocks.ACCEPT: "accept", slack_blocks.DECLINE: "decline", slack_blocks.RESOLVE: "resolve"}
REPLY_SUBTYPES = (None, "", "thread_broadcast")  # a person's message in a thread
CONFLICT_RETRIES = 3  # the conversation changed meanwhile (a customer wrote): check again and retry
NOT_LINKED = "Your Slack user is not linked to a Relaydesk agent (ask an operator to add it to [slack] users)."

Build = Callable[[ConversationView], Awaitable[LogEvent | str]]


def unescape(text: str) -> str:
    """Slack sends message text with ``&``, ``<`` and ``>`` escaped."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    settings = deps.slack
    kv_holder: dict[str, KeyValue] = {}

    async def kv(bucket: str) -> KeyValue:
        if bucket not in kv_holder:
            kv_holder[bucket] = await deps.nc.jetstream().key_value(bucket)
        return kv_holder[bucket]

    async def verified(request: web.Request) -> bytes:
        if not settings.interactive:
            raise web.HTTPNotFound(text="the Slack app is not configured ([slack] signing_secret)")
        raw = await request.read()  # within the API's deadline on bodies (body_deadline.py)
        why = slack_signing.refusal(
            settings.signing_secret,
            request.headers.get(slack_signing.TIMESTAMP),
            request.headers.get(slack_signing.SIGNATURE),
            raw,
            settings.tolerance_seconds,
            extra=secret_list(settings.extra_signing_secrets),
        )
        if why is not None:
            hint = slack_signing.ROTATED_HINT if why == slack_signing.BAD_SIGNATURE else None
            log.warning("slack.request_refused", path=request.path, reason=why, hint=hint)
            count_skip("slack.unsigned_request")
            raise _Refused(why)
        return raw

    async def claim(*parts: str) -> str | None:
        """Claim a Slack request once; None: claimed before (a retry)."""
        key = "slack." + hashlib.sha256(msgspec.json.encode(list(parts))).hexdigest()
        try:
            await (await kv(IDEMPOTENCY_BUCKET)).create(
                key, msgspec.json.encode({"slack": parts[0], "at": time.time()})
            )
        except KeyWrongLastSequenceError:
            return None
        return key

    async def unclaim(key: str) -> None:
        await (await kv(IDEMPOTENCY_BUCKET)).delete(key)

    async def tell(channel: str, user: str, text: str, thread_ts: str | None = None) -> None:
        """An ephemeral message, seen by ``user`` alone."""
        if not settings.bot_token or not channel:
            log.warning("slack.ephemeral_skipped", reason="no bot token or channel", slack_user=user)
            count_skip("slack.ephemeral")
            return
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.5)) as http:
            result = await SlackApi(settings, lambda: http, max_wait=0.0).ephemeral(channel, user, text, thread_ts)
        if not result.ok:
            log.warning("slack.ephemeral_failed", slack_user=user, error=result.error)
            count_skip("slack.ephemeral")

    async def act(cid: str, agent_id: str, command: str, build: Build) -> tuple[LogEvent | None, str]:
        """Append what ``build`` makes of the conversation, if ``agent_id`` may: (event, refusal)."""
        for _ in range(CONFLICT_RETRIES):
            conv = deps.live.state.conversations.get(cid)
            if conv is None:
                return None, f"Conversation {cid} is no longer open."
            why = agent_refusal(deps, agent_id, "POST", f"/v1/conversations/{cid}/{command}")
            if why is not None:
                return None, why[:1].upper() + why[1:] + "."
            made = await build(conv)
            if isinstance(made, str):
                return None, made
            try:
                await deps.append(made, conv.subject_seq)
            except ConcurrencyError:
                continue
            log.info("slack.command", command=type(made).__name__, conversation_id=cid, agent_id=agent_id)
            return made, ""
        return None, f"Conversation {cid} keeps changing: try again."

    @r.post("/slack/interactions")
    async def interactions(request: web.Request) -> web.Response:
        try:
            raw = await verified(request)
        except _Refused as refused:
            return json_error(401, refused.reason)
        try:
            payload = msgspec.json.decode(parse_qs(raw.decode())["payload"][0])
        except (KeyError, IndexError, UnicodeDecodeError, msgspec.DecodeError, RecursionError):
            log.warning("slack.malformed_request", path=request.path, reason="payload is not JSON")
            return json_error(400, "expected a form field payload= holding JSON")
        if not isinstance(payload, dict) or payload.get("type") != "block_actions":
            return ok({})  # other interaction types: nothing of ours
        try:
            clicked = msgspec.convert(payload, BlockActions)
        except msgspec.ValidationError as err:
            log.warning("slack.malformed_request", path=request.path, reason=redact_error(str(err)))
            return json_error(400, f"unexpected block_actions payload: {err}")
        user = clicked.user.id if clicked.user else ""
        channel = (clicked.channel.id if clicked.channel else "") or (
            clicked.container.channel_id if clicked.container else ""
        )
        for action in clicked.actions or []:
            command = ACTION_COMMANDS.get(action.action_id)
            if command is not None:
                await click(user, channel, command, action.value, action.action_ts)
        return ok({})

    async def click(user: str, channel: str, command: str, cid: str, action_ts: str) -> None:
        bound = log.bind(slack_user=user, conversation_id=cid, command=command)
        agent_id = settings.agent_for(user)
        if agent_id is None:
            bound.info("slack.unlinked_user")
            await tell(channel, user, NOT_LINKED)
            return
        key = await claim("click", user, action_ts, command, cid)
        if key is None:
            bound.info("slack.click_repeated")
            return
        conv = deps.live.state.conversations.get(cid)
        if command == "accept" and conv is not None and conv.status == "assigned" and conv.agent_id == agent_id:
            return  # accepted already (a second click): nothing to do

        async def build(conv: ConversationView) -> LogEvent | str:
            actor = f"agent:{agent_id}"
            if command == "resolve":
                return commands.resolution(deps, conv, cid, actor)
            return commands.offer_answer(deps, conv, cid, agent_id, actor, accepted=command == "accept")

        try:
            event, why = await act(cid, agent_id, command, build)
        except BaseException:
            await unclaim(key)  # not done: a retry may do it
            raise
        if event is None:
            bound.info("slack.click_refused", agent_id=agent_id, reason=why)
            await unclaim(key)
            await tell(channel, user, why)

    @r.post("/slack/events")
    async def events(request: web.Request) -> web.Response:
        try:
            raw = await verified(request)
        except _Refused as refused:
            return json_error(401, refused.reason)
        try:
            body = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            log.warning("slack.malformed_request", path=request.path, reason="body is not JSON")
            return json_error(400, "body is not valid JSON")
        if not isinstance(body, dict):
            return json_error(400, "expected a JSON object")
        if body.get("type") == "url_verification":
            return ok({"challenge": str(body.get("challenge", ""))})
        got = body.get("event") or {}
        if body.get("type") != "event_callback" or not isinstance(got, dict) or got.get("type") != "message":
            return ok({})
        # Bots (our own thread posts among them) and edits, joins, deletions: never a reply. A
        # reply also sent to the channel (subtype thread_broadcast) is one: ignored, the agent
        # believed the customer had her answer (found by a security audit).
        if got.get("bot_id") or got.get("subtype") not in REPLY_SUBTYPES or not got.get("thread_ts"):
            return ok({})
        try:
            event = msgspec.convert(got, MessageEvent)
        except msgspec.ValidationError as err:
            log.warning("slack.malformed_request", path=request.path, reason=redact_error(str(err)))
            return json_error(400, f"unexpected message event: {err}")
        if event.thread_ts == event.ts:
            return ok({})  # a new top-level message, not a reply in a thread
        if not is_thread(event.channel, event.thread_ts):
            log.warning("slack.malformed_request", path=request.path, reason="channel or thread_ts is not Slack's")
            return json_error(400, "event.channel or event.thread_ts is not a Slack channel id or timestamp")
        event_id = str(body.get("event_id") or f"{event.channel}:{event.ts}")
        key = await claim("event", event_id)
        if key is None:
            log.info("slack.event_repeated", event_id=event_id, retry=request.headers.get("X-Slack-Retry-Num"))
            return ok({})
        try:
            await thread_reply(event, event_id)
        except BaseException:
            await unclaim(key)  # Slack tries again (a 5xx)
            raise
        return ok({})

    async def thread_reply(event: MessageEvent, event_id: str) -> None:
        channel, thread_ts, user = event.channel, event.thread_ts, event.user
        ref = await SlackRefs(await kv(subjects.STATE_BUCKET)).of_thread(channel, thread_ts)
        if ref is None:
            return  # a thread that is not one of our conversations' (or no longer open)
        bound = log.bind(slack_user=user, conversation_id=ref.conversation_id, event_id=event_id)
        agent_id = settings.agent_for(user)
        if agent_id != ref.agent_id:
            # A teammate talking in the thread is not answering the customer.
            bound.info("slack.thread_message_ignored", reason="not the conversation's agent", agent_id=agent_id)
            return
        text = unescape(event.text).strip()
        if not text:
            return
        cid = ref.conversation_id
        reply_id = "rp_" + hashlib.sha256(f"slack:{event_id}".encode()).hexdigest()[:20]
        made: list[tuple[ReplyRequested, ReplyRoute]] = []

        async def build(conv: ConversationView) -> LogEvent | str:
            try:
                prepared = await commands.reply_request(deps, conv, cid, text, f"agent:{agent_id}", reply_id)
            except ApiError as err:
                # Refused before the log (a text over the channel's limit): the API's 400, told in
                # the thread; raised, it was an error answer to Slack and the agent heard nothing.
                return refusal_of(err)
            if prepared is None:
                return f"Conversation {cid} has no customer address to reply to."
            made[:] = [prepared]
            return prepared[0]

        appended, why = await act(cid, agent_id, "reply", build)
        if appended is None:
            bound.info("slack.reply_refused", agent_id=agent_id, reason=why)
            await tell(channel, user, why, thread_ts)
            return
        await commands.queue_reply(deps, *made[0])
        bound.info("slack.reply_requested", agent_id=agent_id, reply_id=reply_id)

    return r


def refusal_of(err: ApiError) -> str:
    """What an ``ApiError`` says (its ``{"error": …}``), as a sentence for the agent in Slack."""
    try:
        said = msgspec.json.decode(err.text or "{}")
    except msgspec.DecodeError:
        said = {}
    why = str(said.get("error") or "refused") if isinstance(said, dict) else "refused"
    return why[:1].upper() + why[1:] + ("" if why.endswith(".") else ".")


# What of Slack's payloads is read, typed: a payload of another shape (a user that is a
# string, actions that are not a list of objects...) is a 400 and a log line, never a 500
# (Slack retries a 5xx). Fields not named here are ignored.


class SlackRef(msgspec.Struct):
    id: str = ""


class Container(msgspec.Struct):
    channel_id: str = ""


class Action(msgspec.Struct):
    action_id: str = ""
    value: str = ""
    action_ts: str = ""


class BlockActions(msgspec.Struct):
    user: SlackRef | None = None
    channel: SlackRef | None = None
    container: Container | None = None
    actions: list[Action] | None = None


class MessageEvent(msgspec.Struct):
    channel: str = ""
    ts: str = ""
    thread_ts: str = ""
    user: str = ""
    text: str = ""


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
