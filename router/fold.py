"""Folding the log into routing state: ``evolve(state, seq, subject, event) -> state``.

``evolve`` MUTATES and returns the state it is given: with 100,000 conversations a copy per
event would cost more than the routing itself. Callers that need the old state keep a
snapshot (``router.snapshot.dump``) instead. It ignores events at or below
``state.last_seq`` (a replay after a snapshot folds nothing twice), and of an ``UnknownEvent``
(a newer writer's fact this version cannot interpret, or a payload that did not decode) it
keeps only the sequences. An event re-published at a later sequence (same content) is folded
once: it moves its subject's sequence and nothing else (``router.replays``; counted as
``relaydesk_skipped_total{where="router.fold.repeated"}``).

The fold records facts only; policy is applied by ``router.decide``. Who holds a conversation
(an agent's capacity taken and freed) is ``router.holding``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from events import subjects
from events.model import (
    AgentDeactivated,
    AgentOffered,
    AgentProfileUpdated,
    AgentReactivated,
    AgentStatusChanged,
    ConversationAssigned,
    ConversationEscalated,
    ConversationLanguageChanged,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    CustomerCreated,
    CustomerProfileUpdated,
    CustomersMerged,
    EscalationStepReached,
    LogEvent,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    RoutingRequested,
    UnknownEvent,
)
from events.skips import count_skip
from router import customers, index, lifecycle, replays, wrap_up
from router.holding import agent_view, drop_holder, move_channel, take
from router.policy import AGENT_TIERS, FORGIVE_DECLINES
from router.redirect import exclude, forgive, redirect
from router.state import ConversationView, RouterState

# The relaxation name that drops the case-owner / transfer-target preference.
DROP_PREFERRED = "drop_preferred"
# Where a re-published event the fold stepped past is counted (``relaydesk_skipped_total``).
REPEATED = "router.fold.repeated"
# Where an event naming a conversation open for another customer is counted (``_conversation_for``).
OTHER_CUSTOMER = "router.fold.other_customer"


def evolve(state: RouterState, seq: int, subject: str, event: LogEvent | UnknownEvent) -> RouterState:
    """Fold one stored event into ``state`` (in place) and return it."""
    if seq <= state.last_seq:
        return state
    if type(event) is AgentProfileUpdated:
        refuse_tier(event.profile.tier)  # before anything changes: the event is quarantined
    state.last_seq = seq
    if isinstance(event, UnknownEvent):
        # Nothing to interpret (a newer writer's fact, or a quarantined one), but its subject
        # moved on: decisions on that conversation are appended with this sequence as the
        # expected one, or every one of them would conflict until the next event we know.
        if type(event) is UnknownEvent and event.type not in state.skipped_types:
            state.skipped_types[event.type] = seq  # a newer writer's: see router.snapshot.load
        known = _conversation_for(state, subject, create=False)[1]
        if known is not None:
            known.subject_seq = seq
        return state
    kind = type(event)
    conversation_id, conversation = _conversation_for(state, subject, create=kind in _CREATING)
    if conversation is not None:
        conversation.subject_seq = seq
        repeat = kind in replays.REMEMBERED and replays.folded_before(conversation, event)
    elif kind in _DATED:
        repeat = _stale(state, event)  # type: ignore[arg-type]  # _DATED holds only those types
    else:
        repeat = kind in _CREATING  # of a resolved conversation (``_conversation_for``)
    if not repeat and kind in _APPLIED:
        _apply(state, conversation, event)
    if conversation is not None:
        index.touched(state, conversation_id, conversation)
    if repeat:
        count_skip(REPEATED)  # nothing changed: no timer went stale either
        state.__dict__[replays.LAST_REPEAT] = seq
    elif kind in _TIMED:
        index.tidy_timers(state)
    return state


AgentFact = AgentStatusChanged | AgentProfileUpdated | AgentDeactivated | AgentReactivated
# Facts that replace what they are about (a status, a profile): an old one re-published after a
# newer one is not applied (``router.replays.stale``).
_DATED: frozenset[type] = frozenset(
    {AgentStatusChanged, AgentProfileUpdated, AgentDeactivated, AgentReactivated, CustomerProfileUpdated}
)


def refuse_tier(tier: int) -> None:
    """Raise for an agent's tier outside ``AGENT_TIERS`` (what the API and the config write).
    decide walks the tiers from a queue's minimum up to the highest on the roster, so one
    profile of tier 2**62 on the log (hand-written, or a neighbour's) kept every round
    walking for ever: its fold fails instead, before anything changed, and every reader
    quarantines it (the agent keeps the profile she had)."""
    if tier not in AGENT_TIERS:
        raise ValueError(f"an agent's tier goes from {AGENT_TIERS[0]} to {AGENT_TIERS[-1]}, not {tier}")


def _stale(state: RouterState, event: AgentFact | CustomerProfileUpdated) -> bool:
    """Whether ``event`` is an old fact re-published after a newer one about the same agent or
    customer (``router.replays.stale``)."""
    if isinstance(event, CustomerProfileUpdated):
        return replays.stale(customers.customer(state, event.customer_id), event.at)
    return replays.stale(agent_view(state, event.agent_id), event.at)


# Events that open a conversation's view; events ``_apply`` interprets (the rest, such as
# messages, replies and deliveries, only move their subject's sequence); and events that can
# make a timer entry stale (change a conversation's status or queue entry, or drop it), after
# which the timer heaps are tidied (otherwise their tops are still live: nothing to pop).
_CREATING: frozenset[type] = frozenset({ConversationOpened, RoutingRequested})
# Every conversation event the fold interprets but the opening (``router.replays.REMEMBERED``),
# and the customer facts that move a waiting conversation in its queue.
_TIMED: frozenset[type] = (replays.REMEMBERED - {ConversationOpened}) | {CustomerProfileUpdated, CustomersMerged}
_APPLIED: frozenset[type] = _TIMED | {
    AgentProfileUpdated,
    AgentStatusChanged,
    AgentDeactivated,
    AgentReactivated,
    CustomerCreated,
    ConversationOpened,
}


# ``subjects.parse_conversation_subject`` with the prefix tested first (one split per event).
_CONVERSATION_PREFIX = "rd.evt.c."


def _conversation_for(state: RouterState, subject: str, *, create: bool) -> tuple[str, ConversationView | None]:
    """The id and view of the conversation the subject names (("", None): none). Only an
    opening or a routing request creates one: a reply delivered after the conversation was
    resolved (and dropped) must not bring it back, nor an opening or routing request of a
    resolved one (a conversation is never opened again: that is a re-published event)."""
    if not subject.startswith(_CONVERSATION_PREFIX):
        return "", None
    parts = subject.split(".")
    if len(parts) != 5 or parts[4] == subjects.CUSTOMER_SCOPE:
        return "", None
    customer_id, conversation_id = parts[3], parts[4]
    found = state.conversations.get(conversation_id)
    if found is not None and found.customer_id != customer_id:
        # The id of a conversation open for another customer (a hand-written event): not
        # this one. Folded into it, its subject's sequence became the conversation's, and
        # every decision on it conflicted, for good.
        count_skip(OTHER_CUSTOMER)
        return conversation_id, None
    if found is None and create and not replays.was_resolved(state.customers.get(customer_id), conversation_id):
        found = ConversationView(customer_id=customer_id)
        state.conversations[conversation_id] = found
    return conversation_id, found


def _apply(state: RouterState, conv: ConversationView | None, event: LogEvent) -> None:
    if conv is not None:
        # The facts of every routed conversation, by their exact type: the match below tries
        # its cases one after another, and these came after most of them.
        on_conversation = _ON_CONVERSATION.get(type(event))
        if on_conversation is not None:
            on_conversation(state, conv, event)
            return
    match event:
        case AgentProfileUpdated():
            agent = agent_view(state, event.agent_id)
            index.agent_leaving(state, event.agent_id, agent)
            agent.profile = event.profile
            index.agent_changed(state, event.agent_id, agent, roster=True)
            index.holds_changed(state, event.agent_id)  # it may no longer fit what waits for it
        case AgentStatusChanged():
            agent = agent_view(state, event.agent_id)
            if not agent.active:
                return  # deactivated: offline until reactivated (router.lifecycle)
            index.agent_leaving(state, event.agent_id, agent)
            agent.status = event.status
            if event.status == "available":
                agent.expired_in_a_row = 0
            index.agent_changed(state, event.agent_id, agent, roster=True)
            index.status_changed(state, event.agent_id, agent)
        case AgentDeactivated():
            lifecycle.deactivate(state, event.agent_id, agent_view(state, event.agent_id))
        case AgentReactivated():
            lifecycle.reactivate(state, event.agent_id, agent_view(state, event.agent_id))
        case CustomerCreated():
            customers.customer(state, event.customer_id)
        case CustomerProfileUpdated():
            customer = customers.customer(state, event.customer_id)
            customer.tier = event.tier
            customer.flags = tuple(event.flags)
            customer.preferred_language = event.preferred_language
            # Tier and flags are part of each waiting conversation's queue signature.
            for conversation_id in sorted(customer.open_conversations):
                open_conv = state.conversations.get(conversation_id)
                if open_conv is not None and open_conv.status == "waiting":
                    index.requeue(state, conversation_id, open_conv)
        case CustomersMerged():
            customers.merge(state, event.customer_id, event.merged_id)
        case _ if conv is None:
            return
        case ConversationOpened():
            _opened(state, conv, event)
        case RoutingRequested():
            _routing_requested(state, event.conversation_id, conv, event)
        case ConversationLanguageChanged():
            # A waiting conversation is re-queued under its new language (it keeps its
            # place and step); an offered or assigned one keeps its agent.
            conv.requirements = msgspec.structs.replace(conv.requirements, language=event.language)
            if conv.status == "waiting":
                index.requeue(state, event.conversation_id, conv)
        case AgentOffered():
            _offered(state, conv, event)
        case ConversationAssigned():
            _assigned(state, conv, event)
        case OfferAccepted():
            _accepted(state, conv, event)
        case OfferDeclined() | OfferExpired():
            if conv.status == "offered" and conv.agent_id == event.agent_id:
                agent = agent_view(state, event.agent_id)
                if isinstance(event, OfferExpired):
                    agent.expired_in_a_row += 1
                else:
                    agent.expired_in_a_row = 0
                index.streak_changed(state, event.agent_id, agent)
                exclude(conv, event.agent_id, declined=True)
                drop_holder(state, event.conversation_id, conv)
                _wait(state, event.conversation_id, conv)
        case EscalationStepReached():
            if event.step == 0 or event.relaxation == DROP_PREFERRED:
                conv.preference_dropped = True
            conv.step = max(conv.step, event.step)
            if event.relaxation == FORGIVE_DECLINES:
                forgive(conv)
            if conv.status == "waiting":
                index.requeue(state, event.conversation_id, conv)
        case ConversationTransferred() | ConversationEscalated():
            redirect(conv, event)
            drop_holder(state, event.conversation_id, conv)
            _restart_wait(state, event.conversation_id, conv, event.at)
        case ConversationReleased():
            if conv.agent_id == event.agent_id and conv.status in ("offered", "assigned"):
                if event.declined:
                    exclude(conv, event.agent_id, declined=True)
                drop_holder(state, event.conversation_id, conv)
                # The owner just left: waiting for them again would only delay the customer.
                conv.preferred_agent = None
                conv.preferred_is_transfer = False
                _restart_wait(state, event.conversation_id, conv, event.at)
        case ConversationResolved():
            _resolved(state, conv, event)
        case _:
            # Messages, replies, deliveries: only the subject sequence (set above) matters here.
            return


def _opened(state: RouterState, conv: ConversationView, event: ConversationOpened) -> None:
    # An opening after its routing request (out of order, or a second one naming another
    # channel) changes what the waiting conversation is queued by: filed again, as a new
    # language is.
    refile = conv.status == "waiting" and (conv.channel != event.channel or conv.public != event.public)
    conv.customer_id = event.customer_id
    move_channel(state, event.conversation_id, conv, event.channel)
    conv.public = event.public
    conv.opened_at = event.at
    customers.survivor(state, event.customer_id).open_conversations.add(event.conversation_id)
    if refile:
        index.requeue(state, event.conversation_id, conv)


def _offered(state: RouterState, conv: ConversationView, event: AgentOffered) -> None:
    take(state, event.conversation_id, conv, event.agent_id, event.at)
    conv.status = "offered"
    conv.offer_expires_at = event.expires_at
    conv.reason = event.reason
    index.offer_made(state, event.conversation_id, conv)


def _assigned(state: RouterState, conv: ConversationView, event: ConversationAssigned) -> None:
    if conv.agent_id != event.agent_id:
        take(state, event.conversation_id, conv, event.agent_id, event.at)
    conv.status = "assigned"
    conv.offer_expires_at = None
    conv.reason = event.reason
    _became_owner(state, conv, event.agent_id)


def _accepted(state: RouterState, conv: ConversationView, event: OfferAccepted) -> None:
    if conv.status == "offered" and conv.agent_id == event.agent_id:
        conv.status = "assigned"
        conv.offer_expires_at = None
        accepted_by = agent_view(state, event.agent_id)
        accepted_by.expired_in_a_row = 0
        index.streak_changed(state, event.agent_id, accepted_by)
        _became_owner(state, conv, event.agent_id)


def _resolved(state: RouterState, conv: ConversationView, event: ConversationResolved) -> None:
    # Only an agent who took the conversation becomes its case owner, not one merely offered it.
    holder = (conv.agent_id if conv.status == "assigned" else None) or event.agent_id
    # Wrap-up: the slot of the agent who held it and is named as resolving it stays taken.
    wrapping = conv.agent_id if conv.status == "assigned" and conv.agent_id == event.agent_id else None
    if conv.status in ("waiting",):
        index.leave_queue(state, event.conversation_id, conv)
    drop_holder(state, event.conversation_id, conv)
    if wrapping is not None:
        wrap_up.record(state, wrapping, agent_view(state, wrapping), conv.channel, event.at)
    conv.status = "resolved"
    # Its own customer (the subject's) remembers it was resolved, merged or not.
    replays.resolved(customers.customer(state, conv.customer_id), event.conversation_id)
    customer = customers.survivor(state, conv.customer_id)
    customer.open_conversations.discard(event.conversation_id)
    if holder is not None:
        customer.last_agent = holder
        customer.last_agent_resolved_at = event.at
        index.case_owner_changed(state, customer)
    # A resolved conversation needs no routing state: what routing still needs (the
    # case owner) is on the customer. Dropping it keeps memory and snapshots in step
    # with open work, not with history. A later event on its subject starts a fresh
    # view whose subject sequence is that event's, which is all a re-route needs.
    del state.conversations[event.conversation_id]


_ON_CONVERSATION: dict[type, Callable[[RouterState, ConversationView, Any], None]] = {
    ConversationOpened: _opened,
    RoutingRequested: lambda state, conv, event: _routing_requested(state, event.conversation_id, conv, event),
    AgentOffered: _offered,
    ConversationAssigned: _assigned,
    OfferAccepted: _accepted,
    ConversationResolved: _resolved,
}


def _routing_requested(
    state: RouterState, conversation_id: str, conv: ConversationView, event: RoutingRequested
) -> None:
    move_channel(state, conversation_id, conv, event.channel)
    conv.requirements = event.requirements
    customer = customers.survivor(state, conv.customer_id)
    customer.open_conversations.add(conversation_id)
    if conv.status == "new":  # a first request (a resolved view is dropped; a later one starts new)
        conv.excluded = list(event.requirements.excluded_agents)
        conv.declined = []
        conv.transfer_count = 0
        conv.escalated_tier = 0
        # The case owner: an explicit preference, else whoever last served this customer.
        # Whether that agent still counts (recently enough, available) is policy: decide.
        conv.preferred_agent = event.requirements.preferred_agent or customer.last_agent
        conv.preferred_is_transfer = False
        _restart_wait(state, conversation_id, conv, event.at)
    elif conv.status == "waiting":
        index.requeue(state, conversation_id, conv)
    # Offered or assigned: the new requirements apply if it is routed again.


def _became_owner(state: RouterState, conv: ConversationView, agent_id: str) -> None:
    customer = customers.survivor(state, conv.customer_id)
    customer.last_agent = agent_id
    customer.last_agent_resolved_at = None
    index.case_owner_changed(state, customer)


def _restart_wait(state: RouterState, conversation_id: str, conv: ConversationView, at: datetime) -> None:
    """A new waiting episode: escalation starts over from step 0."""
    if conv.status == "waiting":
        index.leave_queue(state, conversation_id, conv)
    conv.waiting_since = at
    conv.step = 0
    conv.preference_dropped = False
    conv.status = "waiting"
    conv.reason = None
    index.enter_queue(state, conversation_id, conv)


def _wait(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """Back to waiting in the same episode (declined, expired): keeps its place and step."""
    conv.status = "waiting"
    conv.reason = None
    index.enter_queue(state, conversation_id, conv)
