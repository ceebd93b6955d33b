"""The actions on one conversation (accept, decline, transfer, escalate, resolve, reply), each
appended as an event with its actor and the conversation's last sequence as the expected one.
Reading conversations (the list, one, the queue board) is ``services.api.conversation_queries``."""

from __future__ import annotations

import structlog
from aiohttp import web

from events import subjects
from events.model import (
    ConversationEscalated,
    ConversationTransferred,
    DeliveryFailed,
    LogEvent,
    MessageReceived,
    MessageSent,
    NoteAdded,
    ReplyRequested,
)
from events.store import ConcurrencyError, StoredEvent
from events.text import blank
from router.explain import nobody_could_take
from router.state import ConversationView
from services.api import caught_up, idempotency, replies, templates
from services.api.commands import Written, offer_answer, queue_reply, reply_request, resolution, same_reply
from services.api.common import ACTOR, TIERS, ApiDeps, ApiError, Body, EmptyBody, TierField, json_error, ok, read_body
from services.api.conversation_queries import last_event_of
from services.api.views import (
    conversation_json,
)

log = structlog.get_logger(__name__)


class AgentActionBody(Body):
    agent_id: str | None = None


class TransferBody(Body):
    to_agent: str | None = None
    to_skill: str | None = None
    to_tier: TierField | None = None
    note: str = ""
    # A skill no active agent has is refused (409) unless this is set: then it waits for one.
    queue_anyway: bool = False

    def targets(self) -> list[str]:
        """The targets named: exactly one is a transfer (an agent, a skill or a tier)."""
        named = {"to_agent": self.to_agent, "to_skill": self.to_skill, "to_tier": self.to_tier}
        return [field for field, value in named.items() if value not in (None, "")]


class EscalateBody(Body):
    to_tier: TierField
    reason: str = ""
    # A tier no active agent who could take it has is refused (409) unless this is set.
    queue_anyway: bool = False


class ReplyBody(Body):
    text: str = ""
    # A WhatsApp template instead of text (services.api.templates), its parameters by name.
    template: str | None = None
    parameters: dict[str, str] = {}
    # Upload ids (POST /v1/uploads) to send with the text (services.api.uploads).
    attachments: list[str] = []


# Events that change nothing a reply or a resolve was decided on: a reply's own outcome, another
# reply, a note.
AFTER_A_REPLY: tuple[type[LogEvent], ...] = (MessageSent, DeliveryFailed, ReplyRequested, NoteAdded)
Tolerated = tuple[type[LogEvent], ...]

TIER_RANGE = "to_tier must be 1 (frontline), 2 (specialist) or 3 (supervisor)"


def _nobody(command: str, blocking: str) -> web.Response:
    """Found by an audit: a transfer to a skill only its sender had, or to a tier nobody had,
    was accepted and the work waited for ever (and later one to a skill whose agents were all
    below a VIP customer's tier minimum, or spoke none of its languages)."""
    return json_error(
        409,
        f"nobody could take this conversation after the {command}: {blocking}",
        blocking=blocking,
        hint='send "queue_anyway": true to let it wait for one',
    )


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    async def conversation(conversation_id: str) -> ConversationView:
        # Open conversations only: the routing view drops a conversation once it is resolved.
        conv = deps.live.state.conversations.get(conversation_id)
        if conv is not None:
            return conv
        known = deps.known_conversations
        if known is not None:
            # Every conversation the view has read is known (services.api.known_conversations);
            # a command waited for the log's end as it stood (caught_up.py): no search.
            if known.customer(conversation_id) is None:
                raise ApiError(404, f"no conversation {conversation_id}")
        elif not await last_event_of(deps, conversation_id):
            raise ApiError(404, f"no conversation {conversation_id}")
        # On the log and not open: resolved. A 404 read as "lost" to a caller retrying.
        raise ApiError(
            409,
            f"conversation {conversation_id} is resolved: only an open conversation takes this",
            conversation_status="resolved",
        )

    async def command(
        event: LogEvent,
        conv: ConversationView,
        cid: str,
        status: int = 200,
        *,
        tolerates: Tolerated = (),
        written: Written | None = None,
    ) -> web.Response:
        """Append ``event`` if the conversation is as the caller saw it; events of the kinds it
        ``tolerates`` written meanwhile are no conflict (found by a burst audit: an agent's
        replies and resolve were 409 because intake recorded her previous reply as sent).
        An event meanwhile that is ``written`` (this command's own, by an earlier attempt) is
        the answer: nothing is appended again."""
        expected = conv.subject_seq
        for _ in range(4):
            try:
                seq = await deps.append(event, expected)
                break
            except ConcurrencyError:
                newer = await deps.store.read(subjects.conversation(conv.customer_id, cid), from_seq=expected + 1)
                if written is not None and (mine := [s for s in newer if written(s.event)]):
                    return answered(mine[0], cid, status)
                if not tolerates or not newer or not all(isinstance(s.event, tolerates) for s in newer):
                    return json_error(409, "the conversation changed meanwhile; fetch it and try again")
                expected = newer[-1].seq
        else:
            return json_error(409, "the conversation kept changing; fetch it and try again")
        # The actor too (found by a docs audit: a named operator's commands were in no log line).
        actor = getattr(event, "actor", "")
        log.info(
            "api.command", command=type(event).__name__, conversation_id=cid, customer_id=conv.customer_id, actor=actor
        )
        return answered(None, cid, status, seq)

    def answered(earlier: StoredEvent | None, cid: str, status: int, seq: int = 0) -> web.Response:
        """A command's answer: the event's sequence and the conversation now; ``earlier``: the
        event an earlier attempt of the same command wrote (a retry with the same key)."""
        if earlier is not None:
            seq = earlier.seq
            log.info("api.command_found_written", command=type(earlier.event).__name__, conversation_id=cid, seq=seq)
        now = deps.live.state.conversations.get(cid)
        # A resolved conversation has left the routing view: say what happened to it.
        body = conversation_json(cid, now) if now is not None else {"id": cid, "status": "resolved"}
        return ok({"seq": seq, "conversation": body}, status)

    async def answer_offer(request: web.Request, *, accepted: bool) -> web.Response:
        cid = request.match_info["id"]
        body = await read_body(request, AgentActionBody)
        conv = await conversation(cid)
        if conv.status != "offered" or conv.agent_id is None:
            return json_error(409, f"conversation {cid} has no open offer", conversation_status=conv.status)
        agent_id = body.agent_id or conv.agent_id
        if agent_id != conv.agent_id:
            return json_error(409, f"the open offer is for another agent, not {agent_id}")
        event = offer_answer(deps, conv, cid, agent_id, request[ACTOR], accepted=accepted)
        return await command(event, conv, cid)

    @r.post("/v1/conversations/{id}/accept")
    async def accept(request: web.Request) -> web.Response:
        return await answer_offer(request, accepted=True)

    @r.post("/v1/conversations/{id}/decline")
    async def decline(request: web.Request) -> web.Response:
        return await answer_offer(request, accepted=False)

    @r.post("/v1/conversations/{id}/transfer")
    async def transfer(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        body = await read_body(request, TransferBody)
        targets = body.targets()
        if not targets:
            return json_error(400, "name a target: to_agent, to_skill or to_tier")
        if len(targets) == 2:  # a transfer goes to one target (README: the transfer endpoint)
            return json_error(400, f"give {targets[0]} or {targets[1]}, not both")
        if len(targets) > 2:
            return json_error(400, "give one of to_agent, to_skill or to_tier, not several")
        if body.to_agent and body.to_agent not in deps.live.state.agents and subjects.is_token(body.to_agent):
            # Perhaps registered through another API process a moment ago (caught_up.py).
            await caught_up.has_read_subject(deps, subjects.agent(body.to_agent))
        if body.to_agent and body.to_agent not in deps.live.state.agents:
            return json_error(404, f"no agent {body.to_agent}")
        if body.to_agent and not getattr(deps.live.state.agents[body.to_agent], "active", True):
            return json_error(409, f"agent {body.to_agent} is deactivated")
        if body.to_skill and (refusal := deps.registry.unknown_skills([body.to_skill])):
            return json_error(400, refusal.reason, **refusal.extra("skill"))
        if body.to_tier is not None and body.to_tier not in TIERS:
            return json_error(400, TIER_RANGE)
        conv = await conversation(cid)
        if body.to_agent and body.to_agent == conv.agent_id:
            return json_error(409, f"{body.to_agent} already holds conversation {cid}")
        event = ConversationTransferred(
            at=deps.clock(),
            customer_id=conv.customer_id,
            conversation_id=cid,
            from_agent=conv.agent_id,
            to_agent=body.to_agent,
            to_skill=body.to_skill,
            to_tier=body.to_tier,
            transfer_count=conv.transfer_count + 1,
            actor=request[ACTOR],
            note=body.note,
        )
        checked = (body.to_skill is not None or body.to_tier is not None) and not body.queue_anyway
        if checked and (blocking := nobody_could_take(deps.live.state, conv, event, deps.policy)):
            return _nobody("transfer", blocking)
        return await command(event, conv, cid)

    @r.post("/v1/conversations/{id}/escalate")
    async def escalate(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        body = await read_body(request, EscalateBody)
        if body.to_tier not in TIERS:
            return json_error(400, TIER_RANGE)
        conv = await conversation(cid)
        event = ConversationEscalated(
            at=deps.clock(),
            customer_id=conv.customer_id,
            conversation_id=cid,
            from_agent=conv.agent_id,
            to_tier=body.to_tier,
            reason=body.reason,
            actor=request[ACTOR],
        )
        if not body.queue_anyway and (blocking := nobody_could_take(deps.live.state, conv, event, deps.policy)):
            return _nobody("escalation", blocking)
        return await command(event, conv, cid)

    @r.post("/v1/conversations/{id}/resolve")
    async def resolve(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        await read_body(request, EmptyBody)  # no fields: a stray one is refused, not ignored
        conv = await conversation(cid)
        return await command(resolution(deps, conv, cid, request[ACTOR]), conv, cid, tolerates=AFTER_A_REPLY)

    @r.post("/v1/conversations/{id}/reply")
    async def reply(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        body = await read_body(request, ReplyBody)
        chosen = templates.resolve(deps, body.template, body.parameters)
        if blank(body.text) and chosen is None and not body.attachments:
            return json_error(400, "text is empty")
        conv = await conversation(cid)
        # With an Idempotency-Key the reply's id comes from it: a retry of a reply whose outcome
        # was unknown (503) finds the reply on the log instead of sending a second one.
        reply_id = idempotency.command_id(request, "rp")
        earlier, sent = await written_before(conv, cid, reply_id)
        prepared = await reply_request(
            deps,
            conv,
            cid,
            body.text,
            request[ACTOR],
            reply_id or "",
            template=chosen,
            attachments=body.attachments,
        )
        if prepared is None:
            return json_error(409, f"conversation {cid} has no customer address to reply to")
        if earlier is not None:
            # Its first attempt may have stopped before queuing it (RD_OUTBOUND drops a second
            # copy it still knows; where it may not, the relay queues it once intake caught up).
            reply = None if sent else earlier.event
            if isinstance(reply, ReplyRequested) and await replies.may_queue_again(deps, earlier.seq, reply):
                await queue_reply(deps, reply, prepared[1])
            return answered(earlier, cid, 202)
        # The customer writing meanwhile is no reason to hold a reply back (it is, to resolve).
        response = await command(
            prepared[0],
            conv,
            cid,
            status=202,
            tolerates=(*AFTER_A_REPLY, MessageReceived),
            written=same_reply(reply_id) if reply_id else None,
        )
        if response.status == 202:
            await queue_reply(deps, *prepared)
        return response

    async def written_before(conv: ConversationView, cid: str, reply_id: str | None) -> tuple[StoredEvent | None, bool]:
        """The reply ``reply_id`` if the log holds it already (an earlier attempt of this
        command), and whether it has an outcome (sent or failed)."""
        if reply_id is None:
            return None, False
        mine = same_reply(reply_id)
        events = await deps.store.read_direct(subjects.conversation(conv.customer_id, cid))
        earlier = next((s for s in events if mine(s.event)), None)
        outcomes = (s.event for s in events if isinstance(s.event, MessageSent | DeliveryFailed))
        outcome = any(e.reply_id == reply_id for e in outcomes)
        return earlier, outcome

    return r
