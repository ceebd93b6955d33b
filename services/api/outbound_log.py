"""What an outbound start writes to the log (``POST /v1/conversations``, services.api.outbound).

The conversation and reply ids, derived from the ``Idempotency-Key`` (and the caller) when
there is one, and the steps appended in order: ``ConversationOpened``, ``ConversationAssigned``
(rule ``outbound_first``) and ``ReplyRequested``, each only if a retry of the same command does
not find it already written.
"""

from __future__ import annotations

import hashlib

import msgspec
from aiohttp import web

from events import subjects
from events.model import ConversationAssigned, ConversationOpened, DecisionReason, LogEvent, ReplyRequested
from events.store import Append, ConcurrencyError
from services import tracing
from services.api.auth import TOKEN_ID
from services.api.common import ACTOR, ApiDeps, ApiError
from services.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from services.api.outbound_address import Target

OUTBOUND_RULE = "outbound_first"


def derived_ids(request: web.Request) -> tuple[str, str]:
    """Conversation and reply ids: from the Idempotency-Key (and the caller) when there is
    one, so a retry finds what the first attempt wrote; random otherwise."""
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key:
        from services.intake.plan import new_id

        return new_id("cv"), new_id("rp")
    scope = f"token:{request[TOKEN_ID]}" if TOKEN_ID in request else request.get(ACTOR, "")
    digest = hashlib.sha256(msgspec.json.encode(["outbound", scope, key])).hexdigest()
    return f"cv_{digest[:20]}", f"rp_{digest[20:40]}"


async def append_missing(
    deps: ApiDeps,
    target: Target,
    cid: str,
    agent_id: str,
    actor: str,
    reply: ReplyRequested,
    *,
    guard: int | None = None,
) -> int:
    """Append what the conversation still lacks of opened → assigned → first reply (all of
    it, unless a retry of the same command finds a part already written). ``guard``: the
    customer's last sequence the checks were made on; the opening is appended only if it is
    still the last (another start or a message meanwhile: 409)."""
    subject = subjects.conversation(target.customer_id, cid)
    written = await deps.store.read(subject)
    kinds = {type(s.event) for s in written}
    last_seq = max((s.seq for s in written), default=0)
    steps: list[LogEvent] = []
    now = deps.clock()
    if ConversationOpened not in kinds:
        steps.append(
            ConversationOpened(
                at=now,
                customer_id=target.customer_id,
                conversation_id=cid,
                channel=target.channel,
                contact=target.contact,
                initiated_by=actor,
                metadata=dict(target.metadata),
            )
        )
    if ConversationAssigned not in kinds:
        steps.append(
            ConversationAssigned(
                at=now,
                customer_id=target.customer_id,
                conversation_id=cid,
                agent_id=agent_id,
                channel=target.channel,
                reason=DecisionReason(rule=OUTBOUND_RULE),
            )
        )
    if not any(isinstance(s.event, ReplyRequested) and s.event.reply_id == reply.reply_id for s in written):
        steps.append(reply)
    for step in steps:
        guarded = guard is not None and isinstance(step, ConversationOpened)
        try:
            if guarded:
                customer = subjects.customer_filter(target.customer_id)
                last_seq = await deps.store.append(
                    Append(step, expected=guard, expected_subject=customer, trace=tracing.headers())
                )
            else:
                last_seq = await deps.store.append(Append(step, expected=last_seq, trace=tracing.headers()))
        except ConcurrencyError as err:
            what = "the customer" if guarded else "the conversation"
            raise ApiError(409, f"{what} changed meanwhile; try again with the same Idempotency-Key") from err
    if last_seq:
        await deps.shows(last_seq)
    return last_seq
