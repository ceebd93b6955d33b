"""Canned replies, raw or filled in for one conversation: those of ``[console]
canned_replies`` (read-only here: the file is theirs), then those supervisors and operators keep
through the API (``PUT``/``DELETE /v1/canned-replies/{id}``, ``services.api.canned_store``),
changed without a restart and seen by every API process at once.

Placeholders: ``{customer.name}`` (the team's name for the customer, else the display name the
channel gave; unknown: ``there``, so "Hi {customer.name}," reads "Hi there,"), ``{agent.name}``
(the agent holding the conversation, else the caller's agent; its id when it has no name) and
``{conversation.id}``. ``{{`` and ``}}`` are literal braces. An unknown placeholder is a
configuration error when the configuration loads (``console_settings.console_problems``).
The text is only a suggestion: the agent edits it and sends it with the reply command.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Literal

import msgspec
import structlog
from aiohttp import web

from events.skips import count_skip
from events.streams import CANNED_BUCKET
from services.api import workspace
from services.api.auth import AGENT
from services.api.canned_store import (
    ID_PATTERN,
    MAX_REPLIES,
    MAX_TEXT,
    MAX_TITLE,
    CannedConflict,
    CannedStore,
    CannedTooLarge,
    Document,
    StoredReply,
)
from services.api.common import ACTOR, ApiDeps, Body, json_error, ok, read_body
from services.api.console_settings import PLACEHOLDER, PLACEHOLDERS, CannedReply, placeholders_in
from services.bus.errors import NATS_UNAVAILABLE

log = structlog.get_logger(__name__)

NAME_FALLBACK = "there"


class ListedReply(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    title: str
    text: str
    # "config": from [console] canned_replies (read-only here); "team": kept by the API.
    source: Literal["config", "team"] = "config"


class CannedReplies(msgspec.Struct, kw_only=True):
    canned_replies: list[ListedReply]
    conversation_id: str | None = None


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each placeholder replaced (unknown ones are refused at start; kept here)."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        return values.get(m.group(1), m.group(0))

    return PLACEHOLDER.sub(one, text)


class CannedReplyBody(Body):
    title: str
    text: str


def problems(reply_id: str, title: str, text: str) -> list[str]:
    """What is wrong with a canned reply sent to the API, one line each (empty: nothing)."""
    out = []
    if not ID_PATTERN.match(reply_id):
        out.append("id must be 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit")
    if not title.strip() or len(title) > MAX_TITLE:
        out.append(f"title must be 1 to {MAX_TITLE} characters")
    if not text.strip() or len(text) > MAX_TEXT:
        out.append(f"text must be 1 to {MAX_TEXT} characters")
    for name in placeholders_in(text):
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            out.append(f"unknown placeholder {{{name}}} (known: {known}; {{{{ is a brace)")
    return out


def listed(reply: CannedReply | StoredReply) -> ListedReply:
    source: Literal["config", "team"] = "team" if isinstance(reply, StoredReply) else "config"
    return ListedReply(id=reply.id, title=reply.title, text=reply.text, source=source)


def install(app: web.Application, deps: ApiDeps) -> None:
    """The bucket of the team's replies made at start (not at the first request): a missing one
    is said then, and every store exists once the services run."""

    async def start(app: web.Application) -> None:
        try:
            await CannedStore(deps.nc.jetstream, deps.replicas).open()
        except Exception as err:  # NATS away or refusing: said now; each request tries again (503)
            log.error("api.canned_bucket_unavailable", bucket=CANNED_BUCKET, error=repr(err)[:200])
            count_skip("api.canned_bucket")

    app.on_startup.append(start)


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    facts = workspace.of(deps.live, deps.store)
    store = CannedStore(deps.nc.jetstream, deps.replicas)
    configured = {reply.id for reply in deps.console.canned_replies}

    async def every_reply() -> list[ListedReply]:
        """The file's, then the team's (by id). A team reply whose id the file took later is
        the file's: listed once (it can still be removed, below)."""
        document, _ = await store.read()
        kept = sorted((reply for reply in document.replies if reply.id not in configured), key=lambda reply: reply.id)
        return [*(listed(reply) for reply in deps.console.canned_replies), *(listed(reply) for reply in kept)]

    @r.get("/v1/canned-replies")
    async def raw(request: web.Request) -> web.Response:
        return ok(CannedReplies(canned_replies=await every_reply()))

    @r.put("/v1/canned-replies/{id}")
    async def save(request: web.Request) -> web.Response:
        """Add or replace one (the whole reply: a PUT names every field)."""
        reply_id = request.match_info["id"]
        body = await read_body(request, CannedReplyBody)
        if found := problems(reply_id, body.title, body.text):
            return json_error(400, "; ".join(found))
        if reply_id in configured:
            return json_error(
                409, f"canned reply {reply_id} is set in the configuration file ([console]); change it there"
            )
        saved = StoredReply(
            id=reply_id, title=body.title, text=body.text, updated_at=deps.clock(), updated_by=request[ACTOR]
        )
        outcome: dict[str, str] = {}

        def put(document: Document) -> bool:
            others = [reply for reply in document.replies if reply.id != reply_id]
            before = next((reply for reply in document.replies if reply.id == reply_id), None)
            if before is not None and (before.title, before.text) == (saved.title, saved.text):
                outcome["status"] = "unchanged"  # a retry: nothing to store
                return False
            if before is None and len(others) >= MAX_REPLIES:
                outcome["status"] = "full"
                return False
            outcome["status"] = "replaced" if before is not None else "added"
            document.replies = [*others, saved]
            return True

        if (failed := await _changed(store, put)) is not None:
            return failed
        if outcome["status"] == "full":
            return json_error(409, f"at most {MAX_REPLIES} canned replies are kept; remove one first")
        log.info("api.canned_reply_saved", reply_id=reply_id, status=outcome["status"], actor=request[ACTOR])
        status = 201 if outcome["status"] == "added" else 200
        return ok(listed(saved), status=status)

    @r.delete("/v1/canned-replies/{id}")
    async def remove(request: web.Request) -> web.Response:
        """Remove one; removing one already gone answers ``removed: false`` (safe to retry)."""
        reply_id = request.match_info["id"]
        gone: list[bool] = []

        def drop(document: Document) -> bool:
            kept = [reply for reply in document.replies if reply.id != reply_id]
            gone.append(len(kept) < len(document.replies))
            document.replies = kept
            return gone[-1]

        if (failed := await _changed(store, drop)) is not None:
            return failed
        if gone[-1]:
            # A team copy of an id the file took later goes too (found in review: it was stuck).
            log.info("api.canned_reply_removed", reply_id=reply_id, actor=request[ACTOR])
        elif reply_id in configured:
            return json_error(
                409, f"canned reply {reply_id} is set in the configuration file ([console]); remove it there"
            )
        return ok({"id": reply_id, "removed": gone[-1]})

    @r.get("/v1/conversations/{id}/canned-replies")
    async def filled(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        state = deps.live.state
        conv = state.conversations.get(cid)
        if conv is None:
            return json_error(404, f"no open conversation {cid}")
        await facts.look_up(facts.missing_names(state, [conv.customer_id]))
        agent_id = conv.agent_id or request.get(AGENT)
        agent = state.agents.get(agent_id) if agent_id else None
        values = {
            "customer.name": facts.name_of(state, conv.customer_id, cid) or NAME_FALLBACK,
            "agent.name": (agent.profile.name if agent is not None else "") or agent_id or "",
            "conversation.id": cid,
        }
        replies = [msgspec.structs.replace(reply, text=fill(reply.text, values)) for reply in await every_reply()]
        return ok(CannedReplies(canned_replies=replies, conversation_id=cid))

    return r


async def _changed(store: CannedStore, edit: Callable[[Document], bool]) -> web.Response | None:
    """Make a change of the document; the error answer when it could not be made."""
    try:
        await store.change(edit)
    except (CannedConflict, CannedTooLarge) as err:
        return json_error(409, str(err))
    except NATS_UNAVAILABLE as err:
        log.warning("api.canned_replies_unavailable", error=repr(err))
        return json_error(503, "canned replies unavailable (NATS): retry the request")
    return None
