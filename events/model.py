"""Every fact Relaydesk records, as frozen msgspec Structs in one tagged union.

Rules of the contract: names are past-tense facts; a new field always has a default;
a tag is never reused. Readers tolerate tags they do not know (see ``events.codec``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeAlias

import msgspec

# A channel is a name, not a closed list: a connector package may bring its own
# (``telegram``). It is a NATS subject token (``rd.inbound.<channel>``, ``rd.out.<channel>``).
CHANNEL_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
Channel: TypeAlias = Annotated[str, msgspec.Meta(pattern=CHANNEL_PATTERN)]
# The channels Relaydesk ships connectors for.
CHANNELS: tuple[str, ...] = ("sms", "email", "chat", "social")
AgentStatus = Literal["available", "away", "offline"]

DEFAULT_CAPACITY: dict[str, int] = {"chat": 3, "sms": 3, "social": 3, "email": 5}

# Every time on the log and on the wire carries its offset: a naive one (a writer's
# ``datetime.now()``) decoded fine and then crashed every reader that compared it with an
# aware one (delivery, the router's decide, the reply outbox), for good, on every restart.
# Decoding refuses it instead: the event is quarantined like any other undecodable one.
Instant: TypeAlias = Annotated[datetime, msgspec.Meta(tz=True)]


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    url: str | None = None
    content_type: str | None = None
    name: str | None = None
    size: int | None = None
    sha256: str | None = None


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    """What an agent must offer to take a conversation."""

    skills: dict[str, int] = {}
    language: str | None = None
    fallback_languages: tuple[str, ...] = ()
    min_tier: int = 1
    priority: int = 0
    sla_due: Instant | None = None
    preferred_agent: str | None = None
    excluded_agents: tuple[str, ...] = ()


class AgentProfile(msgspec.Struct, frozen=True, kw_only=True):
    name: str = ""
    skills: dict[str, int] = {}
    languages: dict[str, int] = {}
    tier: int = 1
    capacity: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_CAPACITY))
    max_total: int | None = None
    # Where a call is bridged to this agent: "client:<identity>", "sip:<uri>" or "+E164"
    # (connectors.voice; "" = the connector's ``[connectors.voice] agents`` entry).
    voice: str = ""


class DecisionReason(msgspec.Struct, frozen=True, kw_only=True):
    """Machine-readable why: which rule chose this agent, with its score parts."""

    rule: str
    step: int = 0
    score: dict[str, float] = {}


class LanguageEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of evidence for a conversation's language: its source (``text``, ``profile``,
    ``history``, ``page``, ``browser``, ``provider``, ``phone``, ``email``, ``chosen``), the
    language it pointed to and how far it counted (the text: its probability; a prior: its weight)."""

    source: str
    language: str
    weight: float = 1.0


class LanguageReason(msgspec.Struct, frozen=True, kw_only=True):
    """Why intake chose a conversation's language (``services.intake.language``)."""

    confidence: float
    evidence: tuple[LanguageEvidence, ...] = ()


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    at: Instant


# --- on rd.inbound.<channel>: what a connector heard from a provider ---------------


class InboundMessage(Event, tag="inbound_message", frozen=True, kw_only=True):
    channel: Channel
    provider: str
    provider_message_id: str
    sender: str
    recipient: str = ""
    text: str = ""
    sender_name: str | None = None
    attachments: tuple[Attachment, ...] = ()
    thread_ref: str | None = None
    public: bool = False
    metadata: dict[str, str] = {}


ReplyOutcome = Literal["sent", "failed", "bounced"]


class ReplyOutcomeReported(Event, tag="reply_outcome_reported", frozen=True, kw_only=True):
    """A connector's report of what became of a reply (``DeliverReply``), on
    ``rd.inbound.<channel>`` like the messages it hears: connectors never write the log.
    Intake records it once per reply on the conversation's subject (``recorded``):
    ``sent`` → ``MessageSent``; ``failed`` (the provider refused, retries ran out) and
    ``bounced`` (a provider's later report, e.g. an email bounce) → ``DeliveryFailed``."""

    channel: Channel
    customer_id: str
    conversation_id: str
    reply_id: str
    outcome: ReplyOutcome
    provider_message_id: str = ""
    reason: str = ""

    def recorded(self) -> MessageSent | DeliveryFailed:
        """The fact intake appends for this report (``at`` is when the connector saw it)."""
        if self.outcome == "sent":
            return MessageSent(
                at=self.at,
                customer_id=self.customer_id,
                conversation_id=self.conversation_id,
                channel=self.channel,
                reply_id=self.reply_id,
                provider_message_id=self.provider_message_id,
            )
        return DeliveryFailed(
            at=self.at,
            customer_id=self.customer_id,
            conversation_id=self.conversation_id,
            channel=self.channel,
            reply_id=self.reply_id,
            reason=self.failure_reason(),
            bounced=self.outcome == "bounced",
        )

    def failure_reason(self) -> str:
        """A bounce's reason always starts with ``bounced`` (how readers tell it apart)."""
        if self.outcome == "bounced":
            return self.reason if self.reason.startswith("bounced") else f"bounced: {self.reason or 'unknown'}"
        return self.reason or "delivery failed"


InboundRecord: TypeAlias = InboundMessage | ReplyOutcomeReported
"""Everything that may stand on ``rd.inbound.<channel>``."""


# --- on rd.evt.c.<customer>.<conversation> -----------------------------------------


class CustomerEvent(Event, frozen=True, kw_only=True):
    customer_id: str


class ConversationEvent(CustomerEvent, frozen=True, kw_only=True):
    conversation_id: str


class CustomerCreated(CustomerEvent, tag="customer_created", frozen=True, kw_only=True):
    identity: str


class CustomerProfileUpdated(CustomerEvent, tag="customer_profile_updated", frozen=True, kw_only=True):
    tier: str = "standard"
    flags: tuple[str, ...] = ()
    preferred_language: str | None = None
    crm_id: str | None = None
    actor: str = ""
    # The customer's name as the team knows it (personal data, sealed); None: not known.
    name: str | None = None


class CustomersMerged(CustomerEvent, tag="customers_merged", frozen=True, kw_only=True):
    """An operator merged ``merged_id`` into this customer (the survivor; on the survivor's
    ``_customer`` subject). Nothing is rewritten: the merged customer's history, open
    conversations, case owner and identities follow the survivor from here on."""

    merged_id: str
    actor: str = ""


class IdentityLinked(CustomerEvent, tag="identity_linked", frozen=True, kw_only=True):
    """An operator (or an import) linked another address (``<kind>:<address>``) to this customer."""

    identity: str
    actor: str = ""


class IdentityUnlinked(CustomerEvent, tag="identity_unlinked", frozen=True, kw_only=True):
    """An operator took an address (``<kind>:<address>``) away from this customer: linked by
    mistake, or a number that passed to someone else. The next message from it starts a new
    customer; what came from it before stays this customer's. On the ``_customer`` subject of
    the family member whose ``CustomerCreated`` or ``IdentityLinked`` recorded the address."""

    identity: str
    actor: str = ""
    reason: str = ""


class CustomerErased(CustomerEvent, tag="customer_erased", frozen=True, kw_only=True):
    """An operator erased this customer on request (GDPR Art. 17), with ``merged_ids``: every
    customer merged into it, erased together. On the customer's ``_customer`` subject. The
    customer's data keys were destroyed first, so their personal fields in the log read as
    ``[erased]`` from now on; readers forget what they hold of them (timelines redact)."""

    reason: str = ""
    actor: str = ""
    merged_ids: tuple[str, ...] = ()


class ConversationOpened(ConversationEvent, tag="conversation_opened", frozen=True, kw_only=True):
    channel: Channel
    contact: str
    public: bool = False
    # The provider message id of the message that opened it (empty before 2026-12): how
    # intake, redelivered that message after a crash, finds the conversation it had opened.
    provider_message_id: str = ""
    # Who started it when an agent or operator did (outbound-first, ``POST /v1/conversations``):
    # the actor (``agent:<id>``, ``operator``); empty: the customer wrote first.
    initiated_by: str = ""
    # Outbound-first only: the provider facts a reply needs while the customer has not written
    # in it yet (platform, the number or page to send from), like ``MessageReceived.metadata``.
    metadata: dict[str, str] = {}


class MessageReceived(ConversationEvent, tag="message_received", frozen=True, kw_only=True):
    channel: Channel
    message_id: str
    provider_message_id: str
    text: str = ""
    language: str | None = None
    attachments: tuple[Attachment, ...] = ()
    # The connector's facts about the message, copied from ``InboundMessage.metadata`` by
    # intake: what a reply needs (social: platform, kind, page_id / phone_number_id, comment_id).
    metadata: dict[str, str] = {}
    # The address the customer wrote this message from (``InboundMessage.sender``): replies go
    # to the last one (a linked number, a merged customer, an email alias). Empty on events
    # written before 2026-12: readers fall back to ``ConversationOpened.contact``.
    contact: str = ""


class RoutingRequested(ConversationEvent, tag="routing_requested", frozen=True, kw_only=True):
    channel: Channel
    requirements: Requirements
    # Why ``requirements.language`` (None on events written before 2026-12, or set by hand).
    language_reason: LanguageReason | None = None


class ConversationLanguageChanged(ConversationEvent, tag="conversation_language_changed", frozen=True, kw_only=True):
    """A later customer message was confidently another language: the conversation's required
    language is now ``language``. The router re-routes it if it is waiting; an offered or
    assigned conversation keeps its agent (the language applies if it is routed again)."""

    language: str
    previous: str | None = None
    reason: LanguageReason | None = None


class AgentOffered(ConversationEvent, tag="agent_offered", frozen=True, kw_only=True):
    agent_id: str
    expires_at: Instant
    reason: DecisionReason


class OfferAccepted(ConversationEvent, tag="offer_accepted", frozen=True, kw_only=True):
    agent_id: str
    actor: str = ""


class OfferDeclined(ConversationEvent, tag="offer_declined", frozen=True, kw_only=True):
    agent_id: str
    actor: str = ""


class OfferExpired(ConversationEvent, tag="offer_expired", frozen=True, kw_only=True):
    agent_id: str


class ConversationAssigned(ConversationEvent, tag="conversation_assigned", frozen=True, kw_only=True):
    agent_id: str
    channel: Channel
    reason: DecisionReason


class EscalationStepReached(ConversationEvent, tag="escalation_step_reached", frozen=True, kw_only=True):
    step: int
    relaxation: str


class ConversationTransferred(ConversationEvent, tag="conversation_transferred", frozen=True, kw_only=True):
    from_agent: str | None = None
    to_agent: str | None = None
    to_skill: str | None = None
    to_tier: int | None = None
    transfer_count: int = 1
    actor: str = ""
    note: str = ""


class ConversationEscalated(ConversationEvent, tag="conversation_escalated", frozen=True, kw_only=True):
    from_agent: str | None = None
    to_tier: int
    reason: str = ""
    actor: str = ""


class ConversationReleased(ConversationEvent, tag="conversation_released", frozen=True, kw_only=True):
    """An agent handed a conversation back (went offline, or her phone did not answer the
    call: ``reason`` says which); it routes again."""

    agent_id: str
    reason: str = ""
    # She did not take it (a call she never answered): left out of it like an offer she
    # declined, until a ``forgive_declines`` step. Not a transfer: reports and
    # ``specialist_after_transfers`` do not count it as one.
    declined: bool = False


class ConversationResolved(ConversationEvent, tag="conversation_resolved", frozen=True, kw_only=True):
    agent_id: str | None = None
    actor: str = ""
    # Resolved by the customer's erasure (services.customers.erase): a notice of it quotes
    # nothing of theirs.
    erased: bool = False
    # Resolved because its address was unlinked from the customer (services.customers.unlink):
    # the address is someone else's now, so no closing notice goes to it.
    address_unlinked: bool = False


class TemplateMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A provider-approved message template (WhatsApp), as configured in ``[[templates]]``.
    No personal data: the values filled in travel sealed beside it (``template_values``)."""

    name: str
    language: str = "en_US"
    # The template's parameters in order: {{1}}, {{2}}… on the Cloud API and Twilio.
    parameters: tuple[str, ...] = ()
    # Twilio Content API sid (``HX…``) of the same template, for WhatsApp through Twilio.
    content_sid: str = ""


class ReplyRequested(ConversationEvent, tag="reply_requested", frozen=True, kw_only=True):
    channel: Channel
    reply_id: str
    agent_id: str | None = None
    text: str = ""
    actor: str = ""
    # Files the agent attached (uploaded to the object store, ``services.api.uploads``).
    attachments: tuple[Attachment, ...] = ()
    # A template message instead of free text (``text`` then holds its rendered preview), and
    # its values in parameter order as a JSON array (personal data: sealed like ``text``).
    template: TemplateMessage | None = None
    template_values: str = ""


class MessageSent(ConversationEvent, tag="message_sent", frozen=True, kw_only=True):
    channel: Channel
    reply_id: str
    provider_message_id: str = ""


class DeliveryFailed(ConversationEvent, tag="delivery_failed", frozen=True, kw_only=True):
    channel: Channel
    reply_id: str
    reason: str
    # A provider's later report that a sent reply did not arrive (an email bounce), recorded
    # beside its MessageSent; older bounces say so only by a reason starting "bounced".
    bounced: bool = False


class NoteAdded(ConversationEvent, tag="note_added", frozen=True, kw_only=True):
    """An agent, supervisor or operator wrote an internal note on a conversation. Never sent
    to the customer; ``text`` is personal data (sealed like a message body)."""

    note_id: str
    text: str
    agent_id: str | None = None
    actor: str = ""


# --- on rd.evt.a.<agent> ------------------------------------------------------------


class AgentProfileUpdated(Event, tag="agent_profile_updated", frozen=True, kw_only=True):
    agent_id: str
    profile: AgentProfile
    actor: str = ""


class AgentStatusChanged(Event, tag="agent_status_changed", frozen=True, kw_only=True):
    agent_id: str
    status: AgentStatus
    actor: str = ""
    reason: str = ""


class AgentDeactivated(Event, tag="agent_deactivated", frozen=True, kw_only=True):
    """An operator deactivated an agent (``DELETE /v1/agents/{id}``): no new work, history kept."""

    agent_id: str
    actor: str = ""
    reason: str = ""


class AgentReactivated(Event, tag="agent_reactivated", frozen=True, kw_only=True):
    agent_id: str
    actor: str = ""


class AgentTokenIssued(Event, tag="agent_token_issued", frozen=True, kw_only=True):
    """An operator issued a bearer token to an agent. Only its sha256 is kept: the token
    itself is shown once, in the API answer. Lives on rd.evt.a.<agent>."""

    agent_id: str
    token_id: str
    token_hash: str
    label: str = ""
    actor: str = ""
    # HMAC-SHA256 by the API over agent id, token id and token hash with its signing key
    # (services.api.tokens.token_proof): a token without a valid proof is ignored by the API.
    proof: str = ""
    # "agent" or "supervisor" (services.api.access); covered by the proof unless "agent", so
    # tokens issued before roles existed keep their proof.
    role: str = "agent"


class AgentTokenRevoked(Event, tag="agent_token_revoked", frozen=True, kw_only=True):
    agent_id: str
    token_id: str
    actor: str = ""


# --- on rd.out.<channel>: a command for the channel's connector ---------------------


class DeliverReply(msgspec.Struct, frozen=True, kw_only=True, tag="deliver_reply", tag_field="type"):
    """Imperative: the connector sends ``text`` to ``contact`` on ``channel``."""

    conversation_id: str
    customer_id: str
    channel: Channel
    reply_id: str
    contact: str
    text: str
    thread_ref: str | None = None
    metadata: dict[str, str] = {}
    # Files to send with the text (``ReplyRequested.attachments``): each ``url`` is a
    # short-lived signed public link the provider (or the connector) fetches the file from.
    attachments: tuple[Attachment, ...] = ()
    # Send this template instead of free text (``ReplyRequested.template``); values as there.
    template: TemplateMessage | None = None
    template_values: str = ""
    # Not a reply but a notice the customer sees where the channel can show one (``resolved``:
    # the conversation ended; the web chat says so). ``text`` is empty; no outcome is reported
    # (the log asked for no reply), and a connector that shows no notices acknowledges it unsent.
    notice: str = ""


LogEvent: TypeAlias = (
    CustomerCreated
    | CustomerProfileUpdated
    | CustomersMerged
    | IdentityLinked
    | IdentityUnlinked
    | CustomerErased
    | ConversationOpened
    | MessageReceived
    | RoutingRequested
    | ConversationLanguageChanged
    | AgentOffered
    | OfferAccepted
    | OfferDeclined
    | OfferExpired
    | ConversationAssigned
    | EscalationStepReached
    | ConversationTransferred
    | ConversationEscalated
    | ConversationReleased
    | ConversationResolved
    | ReplyRequested
    | MessageSent
    | DeliveryFailed
    | NoteAdded
    | AgentProfileUpdated
    | AgentStatusChanged
    | AgentDeactivated
    | AgentReactivated
    | AgentTokenIssued
    | AgentTokenRevoked
)
"""Everything that may stand in RD_EVENTS."""


class UnknownEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A fact written by a newer Relaydesk; kept, shown, never folded."""

    type: str
    raw: bytes
