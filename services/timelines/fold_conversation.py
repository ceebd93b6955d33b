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
    DeliveryFailed,
    EscalationStepReached,
    MessageReceived,
    MessageSent,
    NoteAdded,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    ReplyRequested,
    RoutingRequested,
)
from services.timelines.changes import CustomerChange, Folded, SummaryChange
from services.timelines.rows import TimelineEntry, utc

Fold = Callable[[Any, int, datetime], Folded]


def reason_dict(reason: DecisionReason) -> dict[str, Any]:
    return {"rule": reason.rule, "step": reason.step, "score": dict(sorted(reason.score.items()))}


def compact(values: dict[str, Any]) -> dict[str, Any] | None:
    out = {k: v for k, v in values.items() if v is not None and v != "" and v != [] and v != {}}
    return out or None


def entry_of(
    ev: Any, seq: int, at: datetime, kind: str, conversation_id: str | None = None, **fields: Any
) -> TimelineEntry:
    return TimelineEntry(
        customer_id=ev.customer_id, seq=seq, conversation_id=conversation_id, at=at, kind=kind, **fields
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


def change_of(ev: Any, seq: int, at: datetime, **fields: Any) -> SummaryChange:
    return SummaryChange(conversation_id=ev.conversation_id, customer_id=ev.customer_id, seq=seq, at=at, **fields)


def _opened(ev: ConversationOpened, seq: int, at: datetime) -> Folded:
    cid = ev.conversation_id
    entry = entry_of(
        ev,
        seq,
        at,
        "opened",
        cid,
        channel=ev.channel,
        # The platform of an outbound-first conversation (WhatsApp on Twilio or the Cloud
        # API) before the customer answers: the console offers templates only by it.
        detail=compact({"contact": ev.contact, "public": ev.public or None, "platform": ev.metadata.get("platform")}),
    )
    return Folded(
        entry=entry,
        change=change_of(ev, seq, at, channel=ev.channel, status="waiting", opened=True),
        customer=CustomerChange(customer_id=ev.customer_id, seq=seq, at=at, conversations=1, activity=True),
    )


def _message_received(ev: MessageReceived, seq: int, at: datetime) -> Folded:
    attachments = [msgspec.to_builtins(a) for a in ev.attachments]
    entry = entry_of(
        ev,
        seq,
        at,
        "message_in",
        ev.conversation_id,
        channel=ev.channel,
        direction="in",
        message_id=ev.message_id,
        text=ev.text,
        # The platform tells WhatsApp from SMS on one Twilio channel, and Messenger from
        # Instagram on social. ``subject``: an email's Subject (personal, erased like the text).
        detail=compact(
            {
                "language": ev.language,
                "platform": ev.metadata.get("platform"),
                "subject": ev.metadata.get("subject"),
                "attachments": attachments,
            }
        ),
    )
    return conversation_rows(entry, change_of(ev, seq, at, channel=ev.channel, messages=1))


def _routing_requested(ev: RoutingRequested, seq: int, at: datetime) -> Folded:
    req = ev.requirements
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
    entry = entry_of(ev, seq, at, "routing_requested", ev.conversation_id, channel=ev.channel, detail=compact(detail))
    change = change_of(
        ev,
        seq,
        at,
        channel=ev.channel,
        activity=False,
        priority=req.priority,
        sla_due=None if req.sla_due is None else utc(req.sla_due),
    )
    return Folded(entry=entry, change=change)


def _offered(ev: AgentOffered, seq: int, at: datetime) -> Folded:
    entry = entry_of(
        ev,
        seq,
        at,
        "offered",
        ev.conversation_id,
        agent_id=ev.agent_id,
        reason=reason_dict(ev.reason),
        detail={"expires_at": msgspec.to_builtins(utc(ev.expires_at))},
    )
    change = change_of(ev, seq, at, status="offered", agent_id=ev.agent_id, last_reason=reason_dict(ev.reason))
    return conversation_rows(entry, change)


def _offer_accepted(ev: OfferAccepted, seq: int, at: datetime) -> Folded:
    entry = entry_of(
        ev, seq, at, "offer_accepted", ev.conversation_id, agent_id=ev.agent_id, detail=actor_detail(ev.actor)
    )
    return conversation_rows(entry, change_of(ev, seq, at, status="assigned", agent_id=ev.agent_id, assigned=True))


def _offer_declined(ev: OfferDeclined, seq: int, at: datetime) -> Folded:
    entry = entry_of(
        ev, seq, at, "offer_declined", ev.conversation_id, agent_id=ev.agent_id, detail=actor_detail(ev.actor)
    )
    return conversation_rows(entry, change_of(ev, seq, at, status="waiting", agent_id=None, declined=1))


def _offer_expired(ev: OfferExpired, seq: int, at: datetime) -> Folded:
    entry = entry_of(ev, seq, at, "offer_expired", ev.conversation_id, agent_id=ev.agent_id)
    return conversation_rows(entry, change_of(ev, seq, at, status="waiting", agent_id=None, expired=1))


def _assigned(ev: ConversationAssigned, seq: int, at: datetime) -> Folded:
    entry = entry_of(
        ev,
        seq,
        at,
        "assigned",
        ev.conversation_id,
        channel=ev.channel,
        agent_id=ev.agent_id,
        reason=reason_dict(ev.reason),
    )
    change = change_of(
        ev,
        seq,
        at,
        channel=ev.channel,
        status="assigned",
        agent_id=ev.agent_id,
        last_reason=reason_dict(ev.reason),
        assigned=True,
    )
    return conversation_rows(entry, change)


def _escalation_step(ev: EscalationStepReached, seq: int, at: datetime) -> Folded:
    detail = {"step": ev.step, "relaxation": ev.relaxation}
    entry = entry_of(ev, seq, at, "escalation_step", ev.conversation_id, detail=detail)
    return Folded(entry=entry, change=change_of(ev, seq, at, activity=False))


def _transferred(ev: ConversationTransferred, seq: int, at: datetime) -> Folded:
    detail = {
        "from_agent": ev.from_agent,
        "to_agent": ev.to_agent,
        "to_skill": ev.to_skill,
        "to_tier": ev.to_tier,
        "transfer_count": ev.transfer_count,
        "actor": ev.actor,
        "note": ev.note,
    }
    entry = entry_of(ev, seq, at, "transferred", ev.conversation_id, agent_id=ev.from_agent, detail=compact(detail))
    return conversation_rows(entry, change_of(ev, seq, at, status="waiting", agent_id=None, transfers=1))


def _escalated(ev: ConversationEscalated, seq: int, at: datetime) -> Folded:
    detail = compact({"to_tier": ev.to_tier, "reason": ev.reason, "actor": ev.actor})
    entry = entry_of(ev, seq, at, "escalated", ev.conversation_id, agent_id=ev.from_agent, detail=detail)
    return conversation_rows(entry, change_of(ev, seq, at, status="waiting", agent_id=None))


def _language_changed(ev: ConversationLanguageChanged, seq: int, at: datetime) -> Folded:
    detail = {"language": ev.language, "previous": ev.previous, "reason": msgspec.to_builtins(ev.reason)}
    entry = entry_of(ev, seq, at, "language_changed", ev.conversation_id, detail=compact(detail))
    return Folded(entry=entry, change=change_of(ev, seq, at, activity=False))


def _released(ev: ConversationReleased, seq: int, at: datetime) -> Folded:
    entry = entry_of(
        ev, seq, at, "released", ev.conversation_id, agent_id=ev.agent_id, detail=compact({"reason": ev.reason})
    )
    return conversation_rows(entry, change_of(ev, seq, at, status="waiting", agent_id=None))


def _resolved(ev: ConversationResolved, seq: int, at: datetime) -> Folded:
    entry = entry_of(ev, seq, at, "resolved", ev.conversation_id, agent_id=ev.agent_id, detail=actor_detail(ev.actor))
    return conversation_rows(entry, change_of(ev, seq, at, status="resolved", resolved=True))


def _reply_requested(ev: ReplyRequested, seq: int, at: datetime) -> Folded:
    entry = entry_of(
        ev,
        seq,
        at,
        "message_out",
        ev.conversation_id,
        channel=ev.channel,
        direction="out",
        agent_id=ev.agent_id,
        message_id=ev.reply_id,
        text=ev.text,
        detail=actor_detail(ev.actor),
    )
    return conversation_rows(entry, change_of(ev, seq, at, channel=ev.channel, messages=1, responded=True))


def _note(ev: NoteAdded, seq: int, at: datetime) -> Folded:
    # An internal note: on the timeline for the team, never a message (no direction, not
    # counted); erasure redacts its text like a message body.
    entry = entry_of(
        ev,
        seq,
        at,
        "note",
        ev.conversation_id,
        agent_id=ev.agent_id,
        message_id=ev.note_id,
        text=ev.text,
        detail=actor_detail(ev.actor),
    )
    return Folded(entry=entry, change=change_of(ev, seq, at, activity=False))


def _message_sent(ev: MessageSent, seq: int, at: datetime) -> Folded:
    entry = entry_of(
        ev,
        seq,
        at,
        "message_sent",
        ev.conversation_id,
        channel=ev.channel,
        direction="out",
        message_id=ev.reply_id,
        detail=compact({"provider_message_id": ev.provider_message_id}),
    )
    return Folded(entry=entry, change=change_of(ev, seq, at, channel=ev.channel, activity=False))


def _delivery_failed(ev: DeliveryFailed, seq: int, at: datetime) -> Folded:
    entry = entry_of(
        ev,
        seq,
        at,
        "delivery_failed",
        ev.conversation_id,
        channel=ev.channel,
        direction="out",
        message_id=ev.reply_id,
        detail={"reason": ev.reason},
    )
    return Folded(entry=entry, change=change_of(ev, seq, at, channel=ev.channel, activity=False))


CONVERSATION_FOLDS: dict[type, Fold] = {
    ConversationOpened: _opened,
    MessageReceived: _message_received,
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
    ReplyRequested: _reply_requested,
    NoteAdded: _note,
    MessageSent: _message_sent,
    DeliveryFailed: _delivery_failed,
}
