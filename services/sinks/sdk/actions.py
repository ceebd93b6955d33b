"""What a sink may do to Relaydesk: read a conversation, reply to the customer, resolve.

The same facts the agent API appends (services/api/conversations.py), with the sink as the
actor (``sink:<name>``), the conversation's last sequence as the expected one, and a message
id derived from the helpdesk's own id of the action (a comment id, a status change), so a
webhook the helpdesk sends twice, or a retry after a crash, appends once. A reply is queued
for the customer's channel with the API's own functions (``services.api.replies``); if that
queueing is lost, the API's reply relay queues it again from the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import structlog
from nats.aio.client import Client as NATS

from events import subjects
from events.model import (
    ConversationAssigned,
    ConversationEscalated,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    CustomerProfileUpdated,
    MessageReceived,
    OfferAccepted,
    ReplyRequested,
    RoutingRequested,
)
from events.skips import count_skip
from events.store import Append, ConcurrencyError, EventStore
from events.subjects import parse_conversation_subject
from services.api import replies, reply_routing

from .errors import Transient

log = structlog.get_logger("relaydesk.sink")

# not_holder: the helpdesk user who wrote the reply is not the Relaydesk agent holding the
# conversation (nobody holds it, another agent does, or the user is mapped to no agent).
Outcome = Literal["done", "already", "resolved", "unknown", "not_holder"]


@dataclass
class ConversationFacts:
    """One conversation as the log tells it, with its customer's profile (personal fields opened)."""

    customer_id: str
    conversation_id: str
    channel: str = ""
    contact: str = ""
    status: Literal["open", "resolved"] = "open"
    agent_id: str | None = None
    tier: str = "standard"
    flags: tuple[str, ...] = ()
    customer_name: str | None = None
    crm_id: str | None = None
    language: str | None = None
    skills: dict[str, int] = field(default_factory=dict)
    messages: list[MessageReceived] = field(default_factory=list)
    replies: dict[str, ReplyRequested] = field(default_factory=dict)
    last_seq: int = 0  # the conversation subject's last sequence (the expected one for an append)

    def contact_fields(self) -> dict[str, str]:
        """The contact as a helpdesk user's ``email`` or ``phone`` (neither: empty)."""
        if "@" in self.contact:
            return {"email": self.contact}
        if re.fullmatch(r"\+?[\d\s().-]{6,}", self.contact):
            return {"phone": self.contact}
        return {}


def stable_id(prefix: str, *parts: str) -> str:
    """An id derived from ``parts``: the same action always gets the same id."""
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:20]


class Relaydesk:
    def __init__(
        self,
        store: EventStore,
        nc: NATS,
        actor: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.nc = nc
        self.actor = actor
        self.clock = clock

    async def conversation(self, customer_id: str, conversation_id: str) -> ConversationFacts | None:
        """The conversation folded from its own events and its customer's (the profile); None
        if the log has no such conversation. Only those two subjects are read: the customer's
        other conversations, months of them, are none of this one's business."""
        facts = ConversationFacts(customer_id=customer_id, conversation_id=conversation_id)
        opened = False
        own, profile = await asyncio.gather(  # two subjects, one round trip's wait
            self.store.read_direct(subjects.conversation(customer_id, conversation_id)),
            self.store.read_direct(subjects.customer_scope(customer_id)),
        )
        for stored in sorted([*own, *profile], key=lambda s: s.seq):
            event = stored.event
            if isinstance(event, CustomerProfileUpdated):
                facts.tier, facts.flags, facts.crm_id = event.tier, event.flags, event.crm_id
                if event.name is not None:
                    facts.customer_name = event.name
                facts.language = facts.language or event.preferred_language
                continue
            if parse_conversation_subject(stored.subject) != (customer_id, conversation_id):
                continue
            facts.last_seq = stored.seq
            if isinstance(event, ConversationOpened):
                opened = True
                facts.channel, facts.contact = event.channel, event.contact
            elif isinstance(event, MessageReceived):
                facts.messages.append(event)
                facts.language = event.language or facts.language
            elif isinstance(event, RoutingRequested):
                facts.skills = dict(event.requirements.skills)
                facts.language = event.requirements.language or facts.language
            elif isinstance(event, ConversationAssigned | OfferAccepted):
                facts.agent_id = event.agent_id
            elif isinstance(event, ConversationTransferred | ConversationEscalated | ConversationReleased):
                facts.agent_id = None
            elif isinstance(event, ReplyRequested):
                facts.replies[event.reply_id] = event
            elif isinstance(event, ConversationResolved):
                facts.status, facts.agent_id = "resolved", None
        return facts if opened else None

    async def reply(
        self, customer_id: str, conversation_id: str, text: str, *, key: str, authors: frozenset[str]
    ) -> Outcome:
        """Send ``text`` to the customer on the conversation's own channel, once per ``key``,
        if one of ``authors`` (the Relaydesk agents the helpdesk user who wrote it is mapped to)
        holds the conversation: what the agent API lets an agent do (reply to what is assigned
        to her). Found by a security audit: any helpdesk user's public comment went out as the
        holder's reply, or with none at all on a conversation waiting after a transfer."""
        reply_id = stable_id("rp_", self.actor, key)
        bound = log.bind(actor=self.actor, conversation_id=conversation_id, customer_id=customer_id, reply_id=reply_id)
        for _ in range(5):
            facts = await self.conversation(customer_id, conversation_id)
            if facts is None:
                return "unknown"
            if reply_id in facts.replies:
                await self._queue(facts.replies[reply_id], bound)  # deduplicated by reply id: safe
                return "already"
            if facts.status == "resolved":
                bound.info("sink.reply_refused", reason="the conversation is resolved")
                return "resolved"
            if facts.agent_id is None or facts.agent_id not in authors:
                bound.warning(
                    "sink.reply_refused",
                    reason="not written by the agent holding the conversation",
                    holder=facts.agent_id,
                    authors=sorted(authors),
                )
                count_skip("sink.reply_not_holder")
                return "not_holder"
            event = ReplyRequested(
                at=self.clock(),
                customer_id=customer_id,
                conversation_id=conversation_id,
                channel=reply_routing.reply_channel(facts.channel, facts.messages),  # the customer's last message's
                reply_id=reply_id,
                agent_id=facts.agent_id,
                text=text,
                actor=self.actor,
            )
            try:
                await self.store.append(Append(event, expected=facts.last_seq, msg_id=reply_id))
            except ConcurrencyError:
                continue  # the conversation moved on meanwhile: decide again on what it is now
            bound.info("sink.reply_requested", channel=facts.channel)
            await self._queue(event, bound)
            return "done"
        raise Transient(f"conversation {conversation_id} kept changing; try again")

    async def _queue(self, reply: ReplyRequested, bound: structlog.typing.FilteringBoundLogger) -> None:
        # In turn, as the API queues its own (services.api.replies): behind an earlier reply of
        # the conversation with no outcome yet, the API's relay queues it once that one has one.
        earlier = await replies.waiting_before(self.store, reply, self.clock())
        if earlier:
            bound.info("sink.reply_held_for_order", waiting_for=len(earlier))
            return
        route = await reply_routing.reply_route(self.store, reply.customer_id, reply.conversation_id)
        if route is None:
            bound.warning("sink.reply_no_route")
            return
        try:
            await reply_routing.queue(self.nc, reply_routing.deliver_command(reply, route), self.store.cipher)
        except Exception as err:  # in the log already: the API's reply relay queues it again
            bound.warning("sink.reply_queue_deferred", error=repr(err))
            count_skip("sink.reply_queue")

    async def resolve(self, customer_id: str, conversation_id: str, *, key: str) -> Outcome:
        """Resolve the conversation (once: resolving a resolved conversation does nothing)."""
        msg_id = stable_id("rs_", self.actor, key)
        for _ in range(5):
            facts = await self.conversation(customer_id, conversation_id)
            if facts is None:
                return "unknown"
            if facts.status == "resolved":
                return "already"
            event = ConversationResolved(
                at=self.clock(),
                customer_id=customer_id,
                conversation_id=conversation_id,
                agent_id=facts.agent_id,
                actor=self.actor,
            )
            try:
                await self.store.append(Append(event, expected=facts.last_seq, msg_id=msg_id))
            except ConcurrencyError:
                continue
            log.info("sink.resolved", actor=self.actor, conversation_id=conversation_id, customer_id=customer_id)
            return "done"
        raise Transient(f"conversation {conversation_id} kept changing; try again")
