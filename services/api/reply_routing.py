"""Where a reply goes and how it is queued: the route (channel, address, provider facts and
thread of the customer's last message, else of the conversation's opening), the connector's
``DeliverReply`` made of it, and the queueing on ``rd.out.<channel>`` deduplicated by reply
id. Shared by the reply command, the reply relay (``replies.py``), closing notices and the
helpdesk sinks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from events import subjects
from events.codec import encode
from events.model import ConversationOpened, DeliverReply, MessageReceived, ReplyRequested
from events.personal import PersonalDataCipher
from events.store import EventStore
from router.state import RouterState
from services import tracing


@dataclass(frozen=True, slots=True)
class ReplyRoute:
    """Where a reply goes: the channel, address and provider facts (platform, the number,
    page, phone-number id or mailbox the customer wrote to) of the customer's last message in
    the conversation, and that message's provider-side thread. Before any message (or on
    events older than ``MessageReceived.contact``): the conversation's opening."""

    contact: str
    thread_ref: str | None
    metadata: dict[str, str]
    # The last message's channel: after a link or a merge it may differ from the opening's.
    channel: str = ""


async def reply_route(
    store: EventStore, customer_id: str, conversation_id: str, before_seq: int | None = None
) -> ReplyRoute | None:
    """The route for a reply written now (or, with ``before_seq``, at that point of the log)."""
    opened: ConversationOpened | None = None
    last: MessageReceived | None = None
    for stored in await store.read(subjects.conversation(customer_id, conversation_id)):
        if before_seq is not None and stored.seq >= before_seq:
            break
        if isinstance(stored.event, ConversationOpened):
            opened = stored.event
        elif isinstance(stored.event, MessageReceived) and not stored.event.metadata.get("auto"):
            last = stored.event  # never thread a reply under an auto-reply or a bounce
    if opened is None:
        return None
    return route_of(opened, last)


def route_of(opened: ConversationOpened, last: MessageReceived | None) -> ReplyRoute:
    """The reply route of a conversation opened by ``opened`` whose last customer message is
    ``last``. Address, platform and our number always come from the same message: mixing the
    opening's address with the last message's platform sent SMS to a WhatsApp-only number."""
    if last is None:
        return ReplyRoute(opened.contact, None, dict(opened.metadata), opened.channel)
    metadata = {**last.metadata, "last_customer_message_at": last.at.isoformat()}
    # An older event without its sender's address: the opening's (what earlier versions did).
    contact = last.contact or opened.contact
    return ReplyRoute(contact, last.provider_message_id, metadata, last.channel)


def reply_channel(opened_channel: str, messages: Iterable[MessageReceived]) -> str:
    """The channel a reply goes out on: the last customer message's (not an auto-reply's),
    else the conversation's opening channel. For ``ReplyRequested.channel``."""
    channel = opened_channel
    for message in messages:
        if not message.metadata.get("auto"):
            channel = message.channel
    return channel


def deliver_command(reply: ReplyRequested, route: ReplyRoute, agent_name: str = "") -> DeliverReply:
    """The reply as its connector's work; ``agent_name`` (the replying agent's profile name) is
    passed as ``metadata["agent_name"]``, which the web chat shows above the reply. Found by an
    audit: nothing set it, so the widget never said who answered."""
    metadata = {**route.metadata, "agent_name": agent_name} if agent_name else route.metadata
    return DeliverReply(
        conversation_id=reply.conversation_id,
        customer_id=reply.customer_id,
        # The route's: a reply requested before replies followed the last message's channel
        # (its ReplyRequested says the opening's) still goes where the customer last wrote.
        channel=route.channel or reply.channel,
        reply_id=reply.reply_id,
        contact=route.contact,
        text=reply.text,
        thread_ref=route.thread_ref,
        metadata=metadata,
        attachments=reply.attachments,
        template=reply.template,
        template_values=reply.template_values,
    )


def agent_name(state: RouterState, reply: ReplyRequested) -> str:
    """The replying agent's name as her profile gives it ("" for an operator's reply)."""
    agent = state.agents.get(reply.agent_id) if reply.agent_id else None
    return agent.profile.name if agent is not None else ""


async def queue(nc: NATS, deliver: DeliverReply, cipher: PersonalDataCipher | None = None) -> None:
    """Put ``deliver`` on its channel's outbound queue (deduplicated by reply id), its
    contact, text and metadata sealed with ``cipher`` (the API store's): acknowledged work
    messages are removed from disk, not erased, so they must not hold personal data."""
    if cipher is not None:
        deliver = await cipher.seal_reply(deliver)
    # Tracing on: the command's trace travels with the work, as the log's events carry theirs.
    headers = {"Nats-Msg-Id": deliver.reply_id, **(tracing.headers() or {})}
    await nc.jetstream().publish(subjects.outbound(deliver.channel), encode(deliver), headers=headers)
