"""Internal notes: ``POST /v1/conversations/{id}/notes`` appends ``NoteAdded``.

A note is for the team, never for the customer: nothing is queued on ``rd.out.<channel>``; it
shows on the customer's timeline (kind ``note``) and on the live stream of the agent holding
the conversation. Its text is sealed like a message body. Who may write one: the agent
holding the conversation (``services.api.access``: like a reply), a supervisor or the
operator. A note on a resolved conversation
(a wrap-up remark) is taken from the operator, and from the agent who held it last.
Retries are safe with ``Idempotency-Key`` (the middleware answers the first result again; a
retry of a note whose outcome was unknown, a 503, finds it on the log by its id, derived from
the key, and answers it instead of adding it twice).
"""

from __future__ import annotations

import uuid

import msgspec
import structlog
from aiohttp import web

from events import subjects
from events.model import NoteAdded
from events.text import blank
from services.api import idempotency
from services.api.auth import AGENT, role_of
from services.api.common import ACTOR, ApiDeps, Body, json_error, ok, read_body

log = structlog.get_logger(__name__)

MAX_NOTE_CHARS = 10_000


class NoteBody(Body):
    text: str


class NoteResult(msgspec.Struct, kw_only=True):
    note_id: str
    seq: int
    conversation_id: str


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.post("/v1/conversations/{id}/notes")
    async def add_note(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        body = await read_body(request, NoteBody)
        if blank(body.text):
            return json_error(400, "text is empty")
        if len(body.text) > MAX_NOTE_CHARS:
            return json_error(400, f"a note holds at most {MAX_NOTE_CHARS} characters")
        conv = deps.live.state.conversations.get(cid)
        # An agent's own hold is checked by the access rules while it is open; once resolved,
        # only the agent who held it last (a supervisor or the operator: any).
        agent_of_request = request.get(AGENT) if role_of(request) == "agent" else None
        if conv is not None:
            customer_id = conv.customer_id
            holder = conv.agent_id if conv.status == "assigned" else None
        else:
            # Resolved: the routing view forgot it, its summary lives on in the timelines.
            summary = await deps.timelines.conversation(cid) if deps.timelines is not None else None
            if summary is None:
                return json_error(404, f"no conversation {cid}")
            if agent_of_request is not None and summary.agent_id != agent_of_request:
                return json_error(403, f"conversation {cid} was not held by you")
            customer_id, holder = summary.customer_id, summary.agent_id
        note_id = idempotency.command_id(request, "nt")
        if note_id is not None:
            events = await deps.store.read_direct(subjects.conversation(customer_id, cid))
            earlier = next((s for s in events if isinstance(s.event, NoteAdded) and s.event.note_id == note_id), None)
            if earlier is not None:  # written by an earlier attempt of this command
                return ok(NoteResult(note_id=note_id, seq=earlier.seq, conversation_id=cid), 201)
        note_id = note_id or "nt_" + uuid.uuid4().hex[:20]
        event = NoteAdded(
            at=deps.clock(),
            customer_id=customer_id,
            conversation_id=cid,
            note_id=note_id,
            text=body.text,
            agent_id=holder,
            actor=request[ACTOR],
        )
        # No expected sequence: a note changes nothing a concurrent command relies on, and a
        # customer's message arriving meanwhile must not turn it into a 409.
        seq = await deps.append(event, None)
        log.info("api.note_added", conversation_id=cid, customer_id=customer_id, note_id=note_id, actor=request[ACTOR])
        return ok(NoteResult(note_id=note_id, seq=seq, conversation_id=cid), 201)

    return r
