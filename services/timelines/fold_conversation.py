"""The per-event fold of conversation events (``fold_event`` dispatches to them by class), and
the helpers both kinds of events use. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from events.model import (
    AgentOffered,
    ConversationAssigned,
    ConversationEscalated,
    ConversationLanguageChanged,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    DecisionReason,
    EscalationStepReached,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    RoutingRequested,
)
from services.timelines.changes import CustomerChange, Folded, SummaryChange
from services.timelines.rows import Direction, TimelineEntry, utc

Fold = Callable[[Any, int, datetime], Folded]


def reason_dict(reason: DecisionReason) -> dict[str, Any]:
    return {"rule": reason.rule, "step": reason.step, "score": dict(sorted(reason.score.items()))}


def compact(values: dict[str, Any]) -> dict[str, Any] | None:
    out = {k: v for k, v in values.items() if v is not None and v != "" and v != [] and v != {}}
    return out or None


def entry_of(
    ev: Any,
    seq: int,
    at: datetime,
    kind: str,
    conversation_id: str | None = None,
    *,
    channel: str | None = None,
    direction: Direction = "none",
    agent_id: str | None = None,
    message_id: str | None = None,
    text: str | None = None,
    reason: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
) -> TimelineEntry:
    """An event's timeline entry. Every field named, not handed on as ``**fields``: that cost
    three times as much, once an event in a rebuild."""
    return TimelineEntry(
        customer_id=ev.customer_id,
        seq=seq,
        conversation_id=conversation_id,
        at=at,
        kind=kind,
        channel=channel,
        direction=direction,
        agent_id=agent_id,
        message_id=message_id,
        text=text,
        reason=reason,
        detail=detail,
    )


def conversation_rows(entry: TimelineEntry, change: SummaryChange) -> Folded:
    """A conversation event's rows: a change that counts as activity is the customer's too."""
    if not change.activity:
        return Folded(entry=entry, change=change)
    customer = CustomerChange(customer_id=change.customer_id, seq=change.seq, at=change.at, activity=True)
    return Folded(entry=entry, change=change, customer=customer)


def actor_detail(actor: str | None) -> dict[str, Any] | None:
    """``compact({"actor": actor})`` without the dict when there is no actor."""
    return {"actor": actor} if actor else None


# The folds below build their entry, summary change and customer change in place, naming only
# the fields that differ from the defaults: a rebuild runs one of them for each event of the log,
# and each helper call or keyword left at its default cost more than the struct it built
# (``entry_of`` and ``conversation_rows`` say the same for the folds elsewhere).


def _opened(ev: ConversationOpened, seq: int, at: datetime) -> Folded:
    cid, customer = ev.conversation_id, ev.customer_id
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="opened",
        channel=ev.channel,
        # The platform of an outbound-first conversation (WhatsApp on Twilio or the Cloud
        # API) before the customer answers: the console offers templates only by it.
        detail=compact({"contact": ev.contact, "public": ev.public or None, "platform": ev.metadata.get("platform")}),
    )
    return Folded(
        entry=entry,
        change=SummaryChange(
            conversation_id=cid, customer_id=customer, seq=seq, at=at, channel=ev.channel, status="waiting", opened=True
        ),
        customer=CustomerChange(customer_id=customer, seq=seq, at=at, conversations=1, activity=True),
    )


def _routing_requested(ev: RoutingRequested, seq: int, at: datetime) -> Folded:
    req = ev.requirements
    cid, customer = ev.conversation_id, ev.customer_id
    detail = {
        "skills": dict(sorted(req.skills.items())),
        "language": req.language,
        "min_tier": req.min_tier,
        "priority": req.priority,
        "preferred_agent": req.preferred_agent,
        "excluded_agents": list(req.excluded_agents),
        # Why this language: each piece of evidence and its weight (intake).
        "language_reason": msgspec.to_builtins(ev.language_reason) if ev.language_reason else None,
    }
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="routing_requested",
        channel=ev.channel,
        detail=compact(detail),
    )
    change = SummaryChange(
        conversation_id=cid,
        customer_id=customer,
        seq=seq,
        at=at,
        channel=ev.channel,
        activity=False,
        priority=req.priority,
        sla_due=None if req.sla_due is None else utc(req.sla_due),
    )
    return Folded(entry=entry, change=change)


def _offered(ev: AgentOffered, seq: int, at: datetime) -> Folded:
    cid, customer, agent = ev.conversation_id, ev.customer_id, ev.agent_id
    reason = reason_dict(ev.reason)  # one dict for the entry and the summary: neither changes it
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="offered",
        agent_id=agent,
        reason=reason,
        detail={"expires_at": msgspec.to_builtins(utc(ev.expires_at))},
    )
    change = SummaryChange(
        conversation_id=cid,
        customer_id=customer,
        seq=seq,
        at=at,
        status="offered",
        agent_id=agent,
        last_reason=reason,
    )
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _offer_accepted(ev: OfferAccepted, seq: int, at: datetime) -> Folded:
    cid, customer, agent, actor = ev.conversation_id, ev.customer_id, ev.agent_id, ev.actor
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="offer_accepted",
        agent_id=agent,
        detail={"actor": actor} if actor else None,
    )
    change = SummaryChange(
        conversation_id=cid, customer_id=customer, seq=seq, at=at, status="assigned", agent_id=agent, assigned=True
    )
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _offer_declined(ev: OfferDeclined, seq: int, at: datetime) -> Folded:
    cid, customer, actor = ev.conversation_id, ev.customer_id, ev.actor
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="offer_declined",
        agent_id=ev.agent_id,
        detail={"actor": actor} if actor else None,
    )
    change = SummaryChange(
        conversation_id=cid, customer_id=customer, seq=seq, at=at, status="waiting", agent_id=None, declined=1
    )
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _offer_expired(ev: OfferExpired, seq: int, at: datetime) -> Folded:
    cid, customer = ev.conversation_id, ev.customer_id
    entry = TimelineEntry(
        customer_id=customer, seq=seq, conversation_id=cid, at=at, kind="offer_expired", agent_id=ev.agent_id
    )
    change = SummaryChange(
        conversation_id=cid, customer_id=customer, seq=seq, at=at, status="waiting", agent_id=None, expired=1
    )
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _assigned(ev: ConversationAssigned, seq: int, at: datetime) -> Folded:
    cid, customer, agent = ev.conversation_id, ev.customer_id, ev.agent_id
    reason = reason_dict(ev.reason)  # one dict for the entry and the summary: neither changes it
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="assigned",
        channel=ev.channel,
        agent_id=agent,
        reason=reason,
    )
    change = SummaryChange(
        conversation_id=cid,
        customer_id=customer,
        seq=seq,
        at=at,
        channel=ev.channel,
        status="assigned",
        agent_id=agent,
        last_reason=reason,
        assigned=True,
    )
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _escalation_step(ev: EscalationStepReached, seq: int, at: datetime) -> Folded:
    cid, customer = ev.conversation_id, ev.customer_id
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="escalation_step",
        detail={"step": ev.step, "relaxation": ev.relaxation},
    )
    return Folded(
        entry=entry, change=SummaryChange(conversation_id=cid, customer_id=customer, seq=seq, at=at, activity=False)
    )


def _transferred(ev: ConversationTransferred, seq: int, at: datetime) -> Folded:
    cid, customer = ev.conversation_id, ev.customer_id
    detail = {
        "from_agent": ev.from_agent,
        "to_agent": ev.to_agent,
        "to_skill": ev.to_skill,
        "to_tier": ev.to_tier,
        "transfer_count": ev.transfer_count,
        "actor": ev.actor,
        "note": ev.note,
    }
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="transferred",
        agent_id=ev.from_agent,
        detail=compact(detail),
    )
    change = SummaryChange(
        conversation_id=cid, customer_id=customer, seq=seq, at=at, status="waiting", agent_id=None, transfers=1
    )
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _escalated(ev: ConversationEscalated, seq: int, at: datetime) -> Folded:
    cid, customer = ev.conversation_id, ev.customer_id
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="escalated",
        agent_id=ev.from_agent,
        detail=compact({"to_tier": ev.to_tier, "reason": ev.reason, "actor": ev.actor}),
    )
    change = SummaryChange(conversation_id=cid, customer_id=customer, seq=seq, at=at, status="waiting", agent_id=None)
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _language_changed(ev: ConversationLanguageChanged, seq: int, at: datetime) -> Folded:
    cid, customer = ev.conversation_id, ev.customer_id
    detail = {"language": ev.language, "previous": ev.previous, "reason": msgspec.to_builtins(ev.reason)}
    entry = TimelineEntry(
        customer_id=customer, seq=seq, conversation_id=cid, at=at, kind="language_changed", detail=compact(detail)
    )
    return Folded(
        entry=entry, change=SummaryChange(conversation_id=cid, customer_id=customer, seq=seq, at=at, activity=False)
    )


def _released(ev: ConversationReleased, seq: int, at: datetime) -> Folded:
    cid, customer = ev.conversation_id, ev.customer_id
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="released",
        agent_id=ev.agent_id,
        detail=compact({"reason": ev.reason}),
    )
    change = SummaryChange(conversation_id=cid, customer_id=customer, seq=seq, at=at, status="waiting", agent_id=None)
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _resolved(ev: ConversationResolved, seq: int, at: datetime) -> Folded:
    cid, customer, actor = ev.conversation_id, ev.customer_id, ev.actor
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="resolved",
        agent_id=ev.agent_id,
        detail={"actor": actor} if actor else None,
    )
    change = SummaryChange(conversation_id=cid, customer_id=customer, seq=seq, at=at, status="resolved", resolved=True)
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


CONVERSATION_FOLDS: dict[type, Fold] = {
    ConversationOpened: _opened,
    RoutingRequested: _routing_requested,
    AgentOffered: _offered,
    OfferAccepted: _offer_accepted,
    OfferDeclined: _offer_declined,
    OfferExpired: _offer_expired,
    ConversationAssigned: _assigned,
    EscalationStepReached: _escalation_step,
    ConversationTransferred: _transferred,
    ConversationEscalated: _escalated,
    ConversationLanguageChanged: _language_changed,
    ConversationReleased: _released,
    ConversationResolved: _resolved,
}
