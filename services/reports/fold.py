"""The service-metrics fold: pure, from stored events to per-conversation and per-offer facts.

No I/O and no clock reads. ``evolve(state, stored)`` folds one event of ``rd.evt.c.>`` into a
``ReportState``; folding the same log always gives the same state, so the figures can be
rebuilt at any time and a replay gives the same numbers as the live run.

The state holds *facts* (timestamps, agents, counts), not figures: everything that depends
on a choice made when reading (the report window, the SLA policy for conversations without
an explicit due time, the reopen window, "now" for conversations still waiting) is applied
by ``services.reports.metrics``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import msgspec

from events.digests import remembered
from events.model import (
    AgentOffered,
    ConversationAssigned,
    ConversationEscalated,
    ConversationEvent,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    CustomerProfileUpdated,
    CustomersMerged,
    MessageReceived,
    MessageSent,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    ReplyRequested,
    Requirements,
    RoutingRequested,
)
from events.skips import count_skip
from events.store import StoredEvent
from router import replays
from services.reports.voice import CallFacts, note_assignment, note_message

# 3: channels_seen (channels are open: connectors bring their own); 4: call facts;
# 5: outbound, escalations, first_reply_after_message_at (found by a team lead's audit);
# 6: routable (decisions on a conversation the router has no view of are ignored, as it does)
# 7: folded: an event re-published at a later sequence counts once, and a resolved conversation
#    is never routed again (router.replays)
# 8: an event on another customer's subject naming a conversation is not that conversation's
# 9: the customer's tier (``CustomerProfileUpdated``) as of the routing request (group_by=tier)
#    and a customer already merged is not merged again (router.customers.merge)
REPORT_FOLD_VERSION = 9
"""Bump whenever ``evolve`` derives different facts from the same events."""

OfferOutcome = Literal["pending", "accepted", "declined", "expired", "withdrawn"]


DEFAULT_TIER = "standard"
"""A customer's tier until a ``CustomerProfileUpdated`` says otherwise, as in the router."""

_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def utc(value: datetime) -> datetime:
    """Events carry aware datetimes; a naive one is taken as UTC. An explicit ``sla_due`` is
    not range-checked by the decoder (event times are): one within hours of year 1 or 9999
    whose UTC time does not exist is the nearest UTC time there is, which compares the same
    with every event time (it used to raise, and the report quarantined the routing request)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return _FIRST if value.year == 1 else _LAST


def queue_name(channel: str, requirements: Requirements) -> str:
    """The reporting queue: the channel and the skills the conversation entered with,
    e.g. ``sms:billing``, ``chat:billing+technical``, ``email:any``."""
    skills = "+".join(sorted(requirements.skills)) or "any"
    return f"{channel}:{skills}"


class ConversationFacts(msgspec.Struct, kw_only=True):
    """What the log says about one conversation, as far as service metrics care."""

    conversation_id: str
    customer_id: str
    channel: str | None = None
    queue: str | None = None  # first routing request's channel and skills
    opened_at: datetime | None = None
    first_message_at: datetime | None = None  # the customer's first message
    routed_at: datetime | None = None  # first RoutingRequested
    sla_due: datetime | None = None  # first RoutingRequested's explicit requirements.sla_due
    priority: int = 0
    # The customer's tier (the routing policy's ``customer_tiers``) at the first routing
    # request, or at the opening of one never routed; None only in a snapshot before version 9.
    customer_tier: str | None = None
    first_assigned_at: datetime | None = None  # first ConversationAssigned or OfferAccepted
    first_agent: str | None = None  # who took it first: the agent metrics are attributed to
    agent_id: str | None = None  # who holds it now (or held it when it was resolved)
    first_response_at: datetime | None = None  # first ReplyRequested or MessageSent
    # The first reply at or after the customer's first message: an agent who wrote first
    # (outbound) answers the customer with the reply after the customer's answer.
    first_reply_after_message_at: datetime | None = None
    outbound: bool = False  # opened by an agent or operator (``ConversationOpened.initiated_by``)
    escalations: int = 0
    resolved_at: datetime | None = None  # first resolution
    resolved_by: str | None = None
    erased: bool = False  # resolved by a customer's erasure: nobody served it to an end
    transfers: int = 0
    transferred_by: list[str] = []  # the agent each transfer took it away from ("" if none)
    offers: int = 0
    offers_declined: int = 0
    offers_expired: int = 0
    # Reopen links (same customer, same channel): the resolution this conversation followed,
    # and the first new conversation that followed this one's resolution.
    previous_conversation_id: str | None = None
    previous_resolved_at: datetime | None = None
    next_conversation_id: str | None = None
    next_opened_at: datetime | None = None
    call: CallFacts | None = None  # a voice conversation's call (services.reports.voice)
    # The router holds a view of it (router.fold): seen opened or routed, and not resolved since.
    # Offers, assignments and accepts count only then, as the router applies them only then.
    routable: bool = False
    last_seq: int = 0
    # The 8-byte digests of the decisions, answers and lifecycle events folded (and of a
    # call's messages), as the router keeps them (``router.replays``): a re-published one
    # counts once.
    folded: bytes = b""

    @property
    def day_at(self) -> datetime | None:
        """When the conversation counts as having started (its report day and hour)."""
        return self.opened_at or self.routed_at or self.first_message_at


class OfferFact(msgspec.Struct, kw_only=True):
    seq: int
    conversation_id: str
    agent_id: str
    channel: str | None
    queue: str | None
    offered_at: datetime
    outcome: OfferOutcome = "pending"
    answered_at: datetime | None = None


class ReportState(msgspec.Struct, kw_only=True):
    conversations: dict[str, ConversationFacts] = {}
    offers: list[OfferFact] = []
    # (customer, channel) -> the last resolved conversation no newer conversation followed yet
    last_resolved: dict[str, str] = {}
    merged_into: dict[str, str] = {}  # customer merged away -> the customer it was merged into
    tiers: dict[str, str] = {}  # customer -> tier, for customers whose profile set one
    # Every channel a resolution was recorded on, in order of first sight (a list, not a set,
    # so the state encodes the same however it was built).
    channels_seen: list[str] = []
    open_offer: dict[str, int] = {}  # conversation id -> index in ``offers`` of its pending offer
    last_seq: int = 0
    fold_version: int = REPORT_FOLD_VERSION


def _contact_key(customer_id: str, channel: str) -> str:
    return f"{customer_id}\x1f{channel}"


def survivor(state: ReportState, customer_id: str) -> str:
    """The customer ``customer_id`` now is (itself unless merged away, through any chain)."""
    seen = {customer_id}
    while (nxt := state.merged_into.get(customer_id)) is not None and nxt not in seen:
        seen.add(nxt)
        customer_id = nxt
    return customer_id


def tier_of(state: ReportState, customer_id: str) -> str:
    """The customer's tier now: after a merge the survivor's profile stands, as in the router."""
    return state.tiers.get(survivor(state, customer_id), DEFAULT_TIER)


def _merged(state: ReportState, survivor_id: str, merged_id: str) -> None:
    """Reopens follow a merge: the merged customer's last resolution per channel becomes the
    survivor's if it is the more recent one. As in the router (``router.customers.merge``), a
    customer already merged elsewhere stays there (the first merge in the log stands): it was
    moved to the second survivor, while the router kept it with the first."""
    if not merged_id or merged_id in state.merged_into or survivor(state, survivor_id) == merged_id:
        return
    state.merged_into[merged_id] = survivor_id
    target = survivor(state, survivor_id)
    for channel in state.channels_seen:
        moved = state.last_resolved.pop(_contact_key(merged_id, channel), None)
        if moved is None:
            continue
        key = _contact_key(target, channel)
        current_id = state.last_resolved.get(key)
        current = state.conversations.get(current_id) if current_id else None
        candidate = state.conversations[moved]
        newer = current is None or (
            current.resolved_at is not None
            and candidate.resolved_at is not None
            and current.resolved_at <= candidate.resolved_at
        )
        if newer:
            state.last_resolved[key] = moved


# The events that start a conversation's facts, as they start the router's view of it.
_CREATING = (ConversationOpened, RoutingRequested)
# Where a re-published event the fold stepped past is counted (``relaydesk_skipped_total``).
REPEATED = "reports.fold.repeated"
# Where an event naming another customer's conversation is counted.
OTHER_CUSTOMER = "reports.fold.other_customer"


def _repeated(conv: ConversationFacts, ev: ConversationEvent) -> bool:
    """Folded before (a re-published event), or routing a resolved conversation again (one is
    never opened again: a returning customer gets a new one), as ``router.fold`` judges it.
    Anything else is remembered when it changes facts more than once."""
    kind = type(ev)
    if conv.resolved_at is not None and kind in _CREATING:
        return True
    if kind not in replays.REMEMBERED and not (isinstance(ev, MessageReceived) and ev.channel == "voice"):
        return False  # messages and replies: only first times are kept (idempotent)
    folded = remembered(conv.folded, ev)
    if folded is None:
        return True
    conv.folded = folded
    return False


def evolve(state: ReportState, stored: StoredEvent) -> ReportState:
    """Fold one stored event into ``state`` (in place; also returned). Events at or below
    ``state.last_seq`` are ignored, so a replay of an overlapping range counts nothing twice.
    Non-conversation events (customers, agents, unknown tags), and events of a conversation
    never seen opened or routed, only advance the sequence."""
    if stored.seq <= state.last_seq:
        return state
    state.last_seq = stored.seq
    ev = stored.event
    if isinstance(ev, CustomersMerged):
        _merged(state, ev.customer_id, ev.merged_id)
        return state
    if isinstance(ev, CustomerProfileUpdated):
        state.tiers[ev.customer_id] = ev.tier
        return state
    if not isinstance(ev, ConversationEvent):
        return state
    cid = ev.conversation_id
    conv = state.conversations.get(cid)
    if conv is None:
        # Only an opening or a routing request starts a conversation, as in the router
        # (router.fold._CREATING): a mid-life event of one never seen opened (an assignment
        # published before its opening, a late delivery) is no conversation of its own.
        if not isinstance(ev, _CREATING):
            return state
        conv = ConversationFacts(conversation_id=cid, customer_id=ev.customer_id)
        state.conversations[cid] = conv
    elif conv.customer_id != ev.customer_id:
        # A hand-written event reusing another customer's conversation id: not that
        # conversation's, as ``router.fold`` judges it (it re-routed, resolved and credited it).
        count_skip(OTHER_CUSTOMER)
        return state
    conv.last_seq = stored.seq
    if _repeated(conv, ev):
        count_skip(REPEATED)
        return state
    at = utc(ev.at)

    match ev:
        case ConversationOpened():
            conv.routable = True
            conv.channel = ev.channel
            if conv.opened_at is None:
                conv.opened_at = at
                conv.outbound = bool(ev.initiated_by)
                if conv.routed_at is None:  # provisional: the routing request's tier stands
                    conv.customer_tier = tier_of(state, conv.customer_id)
                # An agent's own follow-up is not the customer coming back: no reopen (found
                # by an audit: it cost the conversation before it its first-contact resolution).
                if not conv.outbound:
                    _link_reopen(state, conv, ev.channel, at)
        case MessageReceived():
            conv.channel = conv.channel or ev.channel
            if conv.first_message_at is None:
                conv.first_message_at = utc(ev.at)
            if ev.channel == "voice":
                conv.call = conv.call or CallFacts()
                note_message(conv.call, ev.metadata.get("kind", ""), ev.provider_message_id, at)
        case RoutingRequested():
            conv.routable = True  # never after a resolution (``_repeated``)
            conv.channel = conv.channel or ev.channel
            if conv.routed_at is None:
                conv.routed_at = at
                conv.queue = queue_name(ev.channel, ev.requirements)
                conv.priority = ev.requirements.priority
                conv.customer_tier = tier_of(state, conv.customer_id)
                conv.sla_due = None if ev.requirements.sla_due is None else utc(ev.requirements.sla_due)
        case AgentOffered() | OfferAccepted() | ConversationAssigned() if not conv.routable:
            # The router has no view of it (resolved, and not routed again): it ignores these
            # decisions, and reports must not credit an agent it never assigned.
            pass
        case AgentOffered():
            _settle_offer(state, cid, "withdrawn", at)
            conv.offers += 1
            state.open_offer[cid] = len(state.offers)
            state.offers.append(
                OfferFact(
                    seq=stored.seq,
                    conversation_id=cid,
                    agent_id=ev.agent_id,
                    channel=conv.channel,
                    queue=conv.queue,
                    offered_at=at,
                )
            )
        case OfferAccepted():
            # The router honours an accept only for the open offer to that agent; so do we.
            if _settle_offer(state, cid, "accepted", at, agent_id=ev.agent_id):
                _assigned(conv, ev.agent_id, at)
        case ConversationAssigned():
            _settle_offer(state, cid, "withdrawn", at)
            conv.channel = conv.channel or ev.channel
            _assigned(conv, ev.agent_id, at)
        case OfferDeclined():
            if _settle_offer(state, cid, "declined", at, agent_id=ev.agent_id):
                conv.offers_declined += 1
        case OfferExpired():
            if _settle_offer(state, cid, "expired", at, agent_id=ev.agent_id):
                conv.offers_expired += 1
        case ConversationTransferred():
            _settle_offer(state, cid, "withdrawn", at)
            conv.transfers += 1
            conv.transferred_by.append(ev.from_agent or conv.agent_id or "")
            conv.agent_id = None
        case ConversationEscalated():
            _settle_offer(state, cid, "withdrawn", at)
            conv.escalations += 1
            conv.agent_id = None
        case ConversationReleased():
            _settle_offer(state, cid, "withdrawn", at)
            conv.agent_id = None
        case ConversationResolved():
            _settle_offer(state, cid, "withdrawn", at)
            conv.routable = False  # the router drops its view of a resolved conversation
            if conv.resolved_at is None:
                conv.resolved_at = at
                conv.resolved_by = ev.agent_id or conv.agent_id
                conv.erased = ev.erased
                if conv.channel is not None and conv.next_opened_at is None:
                    state.last_resolved[_contact_key(survivor(state, conv.customer_id), conv.channel)] = cid
                    if conv.channel not in state.channels_seen:
                        state.channels_seen.append(conv.channel)
        case ReplyRequested() | MessageSent():
            if conv.first_response_at is None:
                conv.first_response_at = at
            if conv.first_message_at is not None and conv.first_reply_after_message_at is None:
                conv.first_reply_after_message_at = at
    return state


def fold_all(events: list[StoredEvent], state: ReportState | None = None) -> ReportState:
    state = ReportState() if state is None else state
    for stored in events:
        evolve(state, stored)
    return state


def _assigned(conv: ConversationFacts, agent_id: str, at: datetime) -> None:
    conv.agent_id = agent_id
    if conv.channel == "voice":
        conv.call = conv.call or CallFacts()
        note_assignment(conv.call, at)
    if conv.first_assigned_at is None:
        conv.first_assigned_at = at
        conv.first_agent = agent_id


def _settle_offer(
    state: ReportState, cid: str, outcome: OfferOutcome, at: datetime, *, agent_id: str | None = None
) -> bool:
    """Close the conversation's pending offer with ``outcome``; False if there was none
    (or it was for another agent than ``agent_id``)."""
    index = state.open_offer.get(cid)
    if index is None:
        return False
    offer = state.offers[index]
    if agent_id is not None and offer.agent_id != agent_id:
        return False
    del state.open_offer[cid]
    offer.outcome = outcome
    offer.answered_at = at
    return True


def _link_reopen(state: ReportState, conv: ConversationFacts, channel: str, at: datetime) -> None:
    """A new conversation on the channel of the customer's last resolved one: link both (the
    reopen window is applied when reading). The first new conversation takes the link.
    Customers merged into one count as one."""
    key = _contact_key(survivor(state, conv.customer_id), channel)
    previous_id = state.last_resolved.pop(key, None)
    previous = state.conversations.get(previous_id) if previous_id else None
    if previous is None or previous.resolved_at is None or previous.conversation_id == conv.conversation_id:
        return
    previous.next_conversation_id = conv.conversation_id
    previous.next_opened_at = at
    conv.previous_conversation_id = previous.conversation_id
    conv.previous_resolved_at = previous.resolved_at
