"""Outbound-first: ``POST /v1/conversations`` starts a conversation with a customer.

An agent (or an operator or supervisor, for an agent they name) writes first: a follow-up
SMS, an email, a WhatsApp template. The conversation is opened already assigned to that
agent, so the router never offers it to anyone else, and the first message is an ordinary
reply (``ReplyRequested`` → ``DeliverReply``), sent by the channel's connector.

Appended on ``rd.evt.c.<customer>.<conversation>``, in order:
``ConversationOpened`` (``initiated_by`` = the actor; ``metadata`` = where a reply goes until
the customer writes: platform, the number / page to send from), ``ConversationAssigned``
(rule ``outbound_first``) and ``ReplyRequested``. The customer's answer is joined to it by
intake like any follow-up on the channel (SMS, WhatsApp, Messenger: the open conversation of
that address; email: the thread, as the reply's Message-ID is recorded by ``MessageSent``).

Retries: with an ``Idempotency-Key`` the conversation and reply ids are derived from the key
(and the caller), so a retry after a failure half way appends only the missing steps and a
retry after success answers the first result (``services.api.idempotency``).

Provider policy, checked before anything is written: Messenger and Instagram let a business
write only within ``window_hours`` of the customer's last message (409 with the reason);
WhatsApp outside its 24-hour window takes only a template (409 naming the templates).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog
from aiohttp import web

from connectors.sdk import text_limits
from events import subjects
from events.model import (
    ConversationOpened,
    MessageReceived,
    ReplyRequested,
)
from events.store import StoredEvent
from events.text import blank
from services.api import templates, uploads
from services.api.access import serves_customer
from services.api.auth import AGENT, role_of
from services.api.commands import queue_reply
from services.api.common import ACTOR, ApiDeps, ApiError, Body, ok, read_body
from services.api.custody import CUSTODY
from services.api.outbound_address import (
    WINDOWED,
    Target,
    contact_for,
    parse_address,
    platform_of_identity,
    plugin_channels,
)
from services.api.outbound_log import append_missing, derived_ids
from services.api.reply_routing import ReplyRoute
from services.api.views import conversation_json
from services.customers import CustomerError, Customers
from services.identity.addresses import InvalidAddress, identity_for

log = structlog.get_logger(__name__)


class StartBody(Body):
    channel: str = ""
    customer_id: str | None = None
    # ``<kind>:<address>``: sms:+15551234567, whatsapp:+15551234567, email:ann@example.com,
    # messenger:<PSID>, instagram:<IGSID>
    address: str | None = None
    text: str = ""
    template: str | None = None
    parameters: dict[str, str] = {}
    agent_id: str | None = None
    subject: str = ""  # email: the subject line
    attachments: list[str] = []  # upload ids (POST /v1/uploads)


class StartResult(msgspec.Struct, kw_only=True):
    """The answer to ``POST /v1/conversations`` (201)."""

    seq: int
    conversation: dict[str, Any]
    customer_id: str
    customer_created: bool
    reply_id: str


def _refuse(status: int, reason: str, **extra: object) -> ApiError:
    return ApiError(status, reason, **extra)


def choose_agent(deps: ApiDeps, request: web.Request, named: str | None) -> str:
    """The agent the conversation is assigned to: an agent token starts it for herself; an
    operator or supervisor names one (a supervisor: herself by default)."""
    role = role_of(request)
    caller: str | None = request.get(AGENT)
    agent_id: str | None
    if role == "agent":
        if named not in (None, caller):
            raise _refuse(403, "an agent token starts conversations only for itself")
        agent_id = caller
    elif role == "supervisor":
        agent_id = named or caller
    else:
        agent_id = named
    if not agent_id:
        raise _refuse(400, "name the agent who takes the conversation: agent_id")
    agent = deps.live.state.agents.get(agent_id)
    if agent is None:
        raise _refuse(404, f"no agent {agent_id}")
    if not getattr(agent, "active", True):
        raise _refuse(409, f"agent {agent_id} is deactivated")
    return agent_id


class OutboundStarter:
    def __init__(self, deps: ApiDeps) -> None:
        self.deps = deps
        self.customers = Customers(deps.store, deps.directory, deps.policy, deps.clock, appended=deps.shows)

    async def target(self, body: StartBody) -> Target:
        deps = self.deps
        if body.address:
            platform, channel, raw = parse_address(body.address, body.channel, deps)
            try:
                identity = identity_for(channel, raw, platform=platform, rules=deps.directory.rules)
            except InvalidAddress as err:
                raise _refuse(400, f"address: {err}") from err
            owner = await deps.directory.lookup(identity)
            if body.customer_id and owner not in (None, body.customer_id):
                raise _refuse(409, "that address belongs to another customer", customer_id=owner)
            if owner is None and body.customer_id:
                raise _refuse(
                    409, "that address is not the customer's: link it first (POST /v1/customers/{id}/identities)"
                )
            # A new address becomes a customer only once the first message may go (``ensure_customer``).
            customer_id = await self.customers.survivor(owner) if owner is not None else ""
        elif body.customer_id:
            customer_id, identity, platform, channel = await self._identity_of(body.customer_id, body.channel)
        else:
            raise _refuse(400, "name the customer: customer_id or address")
        if channel == "chat":
            raise _refuse(400, "web chat cannot be started by an agent: the visitor opens it")
        return Target(customer_id, identity, platform, channel, contact_for(platform, channel, identity))

    async def ensure_customer(self, target: Target) -> None:
        """A new address: its customer, claimed create-only (a racing first message from the
        customer resolves to the same one) and recorded."""
        if target.customer_id:
            return
        customer_id, created = await self.deps.directory.resolve(target.identity)
        if created:
            await self.customers.create(customer_id, target.identity, actor="outbound")
        target.customer_id = await self.customers.survivor(customer_id)
        target.created = created

    async def _identity_of(self, customer_id: str, channel: str) -> tuple[str, str, str, str]:
        if not channel:
            channels = ", ".join(("sms", "email", "social", *plugin_channels(self.deps)))
            raise _refuse(400, f"with customer_id, name the channel ({channels})")
        if channel not in self.deps.registry.channels:
            raise _refuse(400, f"unknown channel {channel!r}", known_channels=list(self.deps.registry.channels))
        try:
            facts = await self.customers.existing(customer_id)
            survivor = await self.customers.survivor(facts.customer_id)
            identities = await self.customers.identities(survivor)
        except CustomerError as err:
            raise _refuse(err.status, err.reason) from err
        for identity in identities:
            platform = platform_of_identity(identity, channel)
            if platform is not None:
                return survivor, identity, platform, channel
        raise _refuse(409, f"customer {customer_id} has no address for {channel}: send address instead")

    async def last_inbound(self, target: Target) -> MessageReceived | None:
        """The customer's last message from this very address (its metadata says how to
        answer it: page, phone number id; its time opens the providers' windows)."""
        contacts: dict[str, str] = {}
        last: MessageReceived | None = None
        if not target.customer_id:
            return None
        for stored in await self._family_events(target.customer_id):
            event = stored.event
            if isinstance(event, ConversationOpened) and event.channel == target.channel:
                contacts[event.conversation_id] = event.contact
            elif isinstance(event, MessageReceived) and event.channel == target.channel:
                if event.metadata.get("auto") or not self._same_address(contacts.get(event.conversation_id), target):
                    continue
                if last is None or event.at >= last.at:
                    last = event
        return last

    def _same_address(self, contact: str | None, target: Target) -> bool:
        if not contact:
            return False
        kind = "whatsapp" if target.platform == "whatsapp" else target.channel
        try:
            return identity_for(kind, contact, rules=self.deps.directory.rules) == target.identity
        except InvalidAddress:
            return False

    async def _family_events(self, customer_id: str) -> list[StoredEvent]:
        events: list[StoredEvent] = []
        for facts in await self.customers.family(customer_id):
            events.extend(await self.deps.store.read_customer_direct(facts.customer_id))
        return events

    async def nothing_open(self, target: Target, cid: str) -> int:
        """The customer's last sequence on the log, once the view has read up to it and shows
        no open conversation on the channel: the opening is appended only if nothing of this
        customer was written since (``append_missing``). Found by a burst audit: 20 starts at
        once, each checking the view alone, opened 20 conversations for one customer."""
        guard = await self.deps.store.last_subject_seq(subjects.customer_filter(target.customer_id))
        await self.deps.has_read(guard)
        if (open_cid := self.open_on_channel(target)) is not None and open_cid != cid:
            raise _refuse(
                409, f"the customer has an open conversation on {target.channel}: reply in it", conversation_id=open_cid
            )
        return guard

    def open_on_channel(self, target: Target) -> str | None:
        """An open conversation of this customer on this channel from this address: the
        customer's answer would join that one, so the agent writes there instead."""
        for cid, conv in self.deps.live.state.conversations.items():
            if (
                target.customer_id
                and conv.customer_id == target.customer_id
                and conv.channel == target.channel
                and conv.status != "resolved"
            ):
                return cid
        return None


def window_refusal(
    target: Target, last: MessageReceived | None, now: datetime, hours: float, *, template: bool
) -> str | None:
    """Why the provider would refuse a first message now (None: it may go)."""
    if target.platform not in WINDOWED or hours <= 0:
        return None
    inside = last is not None and now - last.at <= timedelta(hours=hours)
    if inside:
        return None
    since = "never wrote from this address" if last is None else f"last wrote {_ago(now - last.at)} ago"
    if target.platform == "whatsapp":
        if template:
            return None
        return f"outside WhatsApp's {hours:g}-hour window (the customer {since}): start it with a template"
    return (
        f"{target.platform} lets a business write only within {hours:g} hours of the customer's last message "
        f"(the customer {since})"
    )


def _ago(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.1f} days"


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    starter = OutboundStarter(deps)

    @r.post("/v1/conversations")
    async def start_conversation(request: web.Request) -> web.Response:
        body = await read_body(request, StartBody)
        agent_id = choose_agent(deps, request, body.agent_id)
        if blank(body.text) and not body.template and not body.attachments:
            raise _refuse(400, "write the first message: text, template or attachments")
        target = await starter.target(body)
        if role_of(request) == "agent" and target.customer_id:
            # Writing first makes her the conversation's holder, and a holder reads the
            # customer's whole history: only a customer she may read already, or a new address.
            custody = request.app[CUSTODY]
            if not serves_customer(deps.live.state, custody, agent_id, target.customer_id):
                raise _refuse(
                    403,
                    "an agent starts conversations with new addresses and customers she has served; "
                    "a supervisor or an operator may start this one for her (agent_id)",
                )
        chosen = templates.resolve(deps, body.template, body.parameters) if body.template else None
        if chosen is not None and target.platform != "whatsapp":
            raise _refuse(400, f"templates are WhatsApp messages; this address is {target.platform}")
        platform = {"platform": target.platform}
        if chosen is None and (
            why := text_limits.refusal(target.channel, platform, body.text, with_files=bool(body.attachments))
        ):
            raise _refuse(400, why)
        cid, reply_id = derived_ids(request)
        existing = deps.live.state.conversations.get(cid)
        if existing is None and (open_cid := starter.open_on_channel(target)) is not None:
            raise _refuse(
                409,
                f"the customer has an open conversation on {target.channel}: reply in it",
                conversation_id=open_cid,
            )
        last = await starter.last_inbound(target)
        social = deps.connectors.get("social", {})
        hours = float(social.get("window_hours", 24.0)) if target.channel == "social" else 24.0
        if target.platform in ("messenger", "instagram") and social.get("human_agent_tag") and hours > 0:
            hours = max(hours, 7 * 24.0)  # the HUMAN_AGENT tag answers within 7 days (social.window)
        why = window_refusal(target, last, deps.clock(), hours, template=chosen is not None)
        if why is not None:
            extra: dict[str, Any] = {"templates": templates.names(deps)} if target.platform == "whatsapp" else {}
            raise _refuse(409, why, **extra)
        target.metadata = route_metadata(target, last, body)
        files = await uploads.attachments_for(deps, body.attachments, target.channel)
        await starter.ensure_customer(target)
        guard = await starter.nothing_open(target, cid) if existing is None else None
        event = ReplyRequested(
            at=deps.clock(),
            customer_id=target.customer_id,
            conversation_id=cid,
            channel=target.channel,
            reply_id=reply_id,
            agent_id=agent_id,
            text=chosen.preview if chosen is not None else body.text,
            actor=request[ACTOR],
            template=chosen.message if chosen is not None else None,
            template_values=chosen.values_json if chosen is not None else "",
            attachments=files,
        )
        seq = await append_missing(deps, target, cid, agent_id, request[ACTOR], event, guard=guard)
        await queue_reply(deps, event, ReplyRoute(target.contact, None, dict(target.metadata), target.channel))
        bound = log.bind(customer_id=target.customer_id, channel=target.channel, agent_id=agent_id)
        bound.info("api.outbound_started", conversation_id=cid, reply_id=reply_id, new_customer=target.created)
        conv = deps.live.state.conversations.get(cid)
        body_out = conversation_json(cid, conv) if conv is not None else {"id": cid}
        result = StartResult(
            seq=seq,
            conversation=body_out,
            customer_id=target.customer_id,
            customer_created=target.created,
            reply_id=reply_id,
        )
        return ok(result, 201)

    return r


def route_metadata(target: Target, last: MessageReceived | None, body: StartBody) -> dict[str, str]:
    """What the connector needs to send the first message: the platform, and from the
    customer's last message on this address (if any) the page / number they wrote to."""
    metadata: dict[str, str] = {}
    if last is not None:
        keep = ("platform", "page_id", "phone_number_id", "from", "recipients")
        metadata.update({k: v for k, v in last.metadata.items() if k in keep and v})
        metadata["last_customer_message_at"] = last.at.isoformat()
    if target.channel in ("sms", "social"):
        # A social identity does not say Messenger or Instagram: the customer's last message does.
        platform = metadata.get("platform", "messenger") if target.platform == "messenger" else target.platform
        metadata["platform"] = platform
    if target.channel == "email" and body.subject.strip():
        metadata["subject"] = " ".join(body.subject.split())
    return metadata
