"""Reading conversations: the list (open ones from the live routing view, resolved ones from
the timelines, a page at a time), one conversation, and the queue board. The actions on a
conversation are ``services.api.conversations``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from events import subjects
from router.state import ConversationView
from services.api import access, paging, workspace
from services.api.auth import AGENT, role_of
from services.api.common import ApiDeps, ApiError, json_error, ok
from services.api.custody import CUSTODY
from services.api.queue_board import QueueBoard
from services.api.views import (
    conversation_json,
    conversation_subject,
    effective_json,
    language_reason_json,
    summary_json,
    waiting_because_json,
)

# ``GET /v1/conversations?status=``: the routing view's statuses, and resolved (the timelines).
STATUSES = ("new", "waiting", "offered", "assigned", "resolved")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _opened_order(item: tuple[str, ConversationView]) -> tuple[int, str]:
    """An open conversation's place in the list: when it opened (microseconds; none: first),
    then its id. Both stay as they are for its whole life, so a cursor on them is stable."""
    cid, conv = item
    opened = conv.opened_at
    if opened is None:
        return (-1, cid)
    if opened.tzinfo is None:  # the log's times are aware; a naive one is UTC
        opened = opened.replace(tzinfo=UTC)
    return ((opened - _EPOCH) // _MICROSECOND, cid)


async def last_event_of(deps: ApiDeps, conversation_id: str) -> int:
    """The log's last event of a conversation, whoever its customer (0: none, or not an id)."""
    if not subjects.is_token(conversation_id):
        return 0
    return await deps.store.last_subject_seq(subjects.conversation_filter(conversation_id))


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/v1/conversations")
    async def list_conversations(request: web.Request) -> web.Response:
        status = request.query.get("status")
        agent = request.query.get("agent")
        if status is not None and status not in STATUSES:
            return json_error(400, f"status is one of {', '.join(STATUSES)}, not {status!r}", statuses=list(STATUSES))
        if role_of(request) == "agent":  # only hers (services.api.access)
            custody = request.app.get(CUSTODY)
            return await access.agent_conversations(deps, custody, request[AGENT], status, agent)
        limit = paging.limit_of(request)
        if status == "resolved":
            if deps.timelines is None:
                return json_error(503, "resolved conversations are read from the timelines, not available here")
            # Most recently resolved first, a page at a time (found by a scale audit: a limit and
            # no cursor, by last activity): resolved_at then id, a key a resolved conversation
            # keeps for good, so paging while others resolve lists each one there all along
            # once. No total: that would count every resolved conversation there ever was.
            after = resolved_cursor(request)
            summaries = await deps.timelines.resolved_conversations(agent_id=agent, after=after, limit=limit + 1)
            shown = summaries[:limit]
            last = shown[-1] if len(summaries) > limit else None
            resolved = [summary_json(s) for s in shown]
            next_cursor = None
            if last is not None and last.resolved_at is not None:
                next_cursor = paging.encode_cursor((last.resolved_at.isoformat(), last.conversation_id))
            return ok({"conversations": resolved, "count": len(resolved), "next_cursor": next_cursor})
        # Oldest opened first, a page at a time (services.api.paging): 80,000 open conversations
        # were one answer of tens of megabytes.
        after = paging.cursor_of(request, (int, str))
        found = paging.page(
            (
                (cid, conv)
                for cid, conv in deps.live.state.conversations.items()
                if (status is None or conv.status == status) and (agent is None or conv.agent_id == agent)
            ),
            _opened_order,
            after,
            limit,
        )
        out = [conversation_json(cid, conv) for cid, conv in found.items]
        return ok({"conversations": out, "count": len(out), "total": found.total, "next_cursor": found.next_cursor})

    @r.get("/v1/conversations/{id}")
    async def get_conversation(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        state = deps.live.state
        conv = state.conversations.get(cid)
        if conv is not None:
            return ok(
                {
                    **conversation_json(cid, conv),
                    "subject": conversation_subject(workspace.of(deps.live, deps.store), cid),
                    "effective": effective_json(state, conv, deps.policy),
                    "waiting_because": waiting_because_json(state, conv, deps.clock(), deps.policy),
                    "language_reason": await language_reason_json(deps.store, conv.customer_id, cid),
                }
            )
        # The routing view forgets resolved conversations; their summary lives on.
        summary = await deps.timelines.conversation(cid) if deps.timelines else None
        if summary is None:
            return await not_found_or_not_yet(cid)
        return ok(summary_json(summary))

    async def not_found_or_not_yet(cid: str) -> web.Response:
        """404 only for a conversation the log does not hold: one resolved while the timelines
        projection lags (the projector stopped, a rebuild) is 503 with ``Retry-After``."""
        if deps.timelines is None or not (last := await last_event_of(deps, cid)):
            return json_error(404, f"no conversation {cid}")
        projected = await deps.timelines.checkpoints()
        at = min(projected.values(), default=0)
        if projected and at >= last:
            return json_error(404, f"no conversation {cid}")  # projected, and not there: erased
        response = json_error(
            503,
            f"conversation {cid} is resolved, and the timelines projection has not recorded it yet "
            f"(its last event is {last}; the projection stands at {at})",
            last_event=last,
            projection=projected,
        )
        response.headers["Retry-After"] = "2"
        return response

    board = QueueBoard()

    @r.get("/v1/queues")
    async def queues(request: web.Request) -> web.Response:
        return ok(board.answer(deps.live.state, deps.clock(), deps.policy))

    return r


def resolved_cursor(request: web.Request) -> tuple[datetime, str] | None:
    """``?cursor=`` of ``status=resolved``: the last conversation's resolution time and id."""
    key = paging.cursor_of(request, (str, str))
    if key is None:
        return None
    try:
        at = datetime.fromisoformat(str(key[0]))
    except ValueError:
        raise ApiError(400, "cursor is not one this endpoint gave (pass next_cursor back as it came)") from None
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)), str(key[1])
