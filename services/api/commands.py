"""The events behind the conversation commands, shared by the HTTP routes
(``services.api.conversations``), the Slack app (``slack_routes``) and outbound-first
conversations (``outbound``): an offer answered, a resolution, a reply and its queuing."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import structlog

from connectors.sdk import text_limits
from events.model import ConversationResolved, LogEvent, OfferAccepted, OfferDeclined, ReplyRequested, UnknownEvent
from events.skips import count_skip
from router.state import ConversationView
from services.api import replies, reply_routing, templates, uploads
from services.api.common import ApiDeps, ApiError

log = structlog.get_logger(__name__)

# "This event is the one the command would write" (a retry finds its first attempt's reply).
Written = Callable[[LogEvent | UnknownEvent], bool]


def offer_answer(
    deps: ApiDeps, conv: ConversationView, cid: str, agent_id: str, actor: str, *, accepted: bool
) -> OfferAccepted | OfferDeclined:
    cls = OfferAccepted if accepted else OfferDeclined
    return cls(at=deps.clock(), customer_id=conv.customer_id, conversation_id=cid, agent_id=agent_id, actor=actor)


def resolution(deps: ApiDeps, conv: ConversationView, cid: str, actor: str) -> ConversationResolved:
    return ConversationResolved(
        at=deps.clock(),
        customer_id=conv.customer_id,
        conversation_id=cid,
        agent_id=conv.agent_id if conv.status == "assigned" else None,  # an offer is not a hold
        actor=actor,
    )


async def reply_request(
    deps: ApiDeps,
    conv: ConversationView,
    cid: str,
    text: str,
    actor: str,
    reply_id: str = "",
    *,
    template: templates.ChosenTemplate | None = None,
    attachments: list[str] | None = None,
) -> tuple[ReplyRequested, reply_routing.ReplyRoute] | None:
    """The reply event and where it goes; None when the conversation has no address to reply to."""
    route = await reply_routing.reply_route(deps.store, conv.customer_id, cid)
    if route is None:
        return None
    platform = route.metadata.get("platform") or route.channel or conv.channel
    if template is not None and platform != "whatsapp":
        # As POST /v1/conversations says: found by an integrator, a connector without templates
        # was handed one and sent its preview as plain text.
        raise ApiError(400, f"templates are WhatsApp messages; this conversation's replies go out on {platform}")
    channel = route.channel or conv.channel
    if template is None and (why := text_limits.refusal(channel, route.metadata, text, with_files=bool(attachments))):
        raise ApiError(400, why)  # it could never be delivered: refused before it is on the log
    event = ReplyRequested(
        at=deps.clock(),
        customer_id=conv.customer_id,
        conversation_id=cid,
        channel=channel,  # the customer's last message's channel
        reply_id=reply_id or "rp_" + uuid.uuid4().hex[:20],
        agent_id=conv.agent_id if conv.status == "assigned" else None,  # an offer is not a hold
        text=template.preview if template is not None else text,
        actor=actor,
        template=template.message if template is not None else None,
        template_values=template.values_json if template is not None else "",
        attachments=await uploads.attachments_for(deps, attachments or [], channel),
    )
    return event, route


async def queue_reply(deps: ApiDeps, event: ReplyRequested, route: reply_routing.ReplyRoute) -> None:
    """After the reply is in the log: from here on it will go out. Queue it now, unless an
    earlier reply of the conversation has no outcome yet (the relay, replies.py, queues it as
    soon as they all have: replies go out in the order they were written); if queuing fails,
    the relay queues it from the log a little later."""
    try:
        earlier = await replies.waiting_before(deps.store, event, deps.clock())
        if earlier:
            log.info(
                "reply.held_for_order",
                conversation_id=event.conversation_id,
                reply_id=event.reply_id,
                waiting_for=len(earlier),
            )
            return
        command = reply_routing.deliver_command(event, route, reply_routing.agent_name(deps.live.state, event))
        deliver = uploads.with_links(deps, command)
        await reply_routing.queue(deps.nc, deliver, deps.store.cipher)
    except Exception as err:
        log.warning("reply.queue_deferred", conversation_id=event.conversation_id, error=repr(err))
        count_skip("api.reply_queue")  # not lost: the reply relay queues it from the log


def same_reply(reply_id: str) -> Written:
    return lambda event: isinstance(event, ReplyRequested) and event.reply_id == reply_id
