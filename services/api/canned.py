"""Canned replies from ``[console] canned_replies``, raw or filled in for one conversation.

Placeholders: ``{customer.name}`` (the team's name for the customer, else the display name the
channel gave; unknown: ``there``, so "Hi {customer.name}," reads "Hi there,"), ``{agent.name}``
(the agent holding the conversation, else the caller's agent; its id when it has no name) and
``{conversation.id}``. ``{{`` and ``}}`` are literal braces. An unknown placeholder is a
configuration error when the configuration loads (``console_settings.console_problems``).
The text is only a suggestion: the agent edits it and sends it with the reply command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec
from aiohttp import web

from services.api import workspace
from services.api.auth import AGENT
from services.api.common import ApiDeps, json_error, ok
from services.api.console_settings import PLACEHOLDER, CannedReply

NAME_FALLBACK = "there"


class CannedReplies(msgspec.Struct, kw_only=True):
    canned_replies: list[CannedReply]
    conversation_id: str | None = None


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each placeholder replaced (unknown ones are refused at start; kept here)."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        return values.get(m.group(1), m.group(0))

    return PLACEHOLDER.sub(one, text)


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    facts = workspace.of(deps.live, deps.store)

    @r.get("/v1/canned-replies")
    async def raw(request: web.Request) -> web.Response:
        return ok(CannedReplies(canned_replies=list(deps.console.canned_replies)))

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
        replies = [
            CannedReply(id=reply.id, title=reply.title, text=fill(reply.text, values))
            for reply in deps.console.canned_replies
        ]
        return ok(CannedReplies(canned_replies=replies, conversation_id=cid))

    return r
