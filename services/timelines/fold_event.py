"""The per-event fold: ONE stored event to the rows it writes (``Folded``): at most one
timeline entry, one change to its conversation's summary, one change to its customer's
summary and one merge link. Pure: no I/O, no clock."""

from __future__ import annotations

from typing import Any

import msgspec

from events.model import (
    CHANNELS,
    AgentOffered,
    ConversationAssigned,
    ConversationEscalated,
    ConversationEvent,
    ConversationLanguageChanged,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    CustomerCreated,
    CustomerErased,
    CustomerEvent,
    CustomerProfileUpdated,
    CustomersMerged,
    DecisionReason,
    DeliveryFailed,
    EscalationStepReached,
    IdentityLinked,
    MessageReceived,
    MessageSent,
    NoteAdded,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    ReplyRequested,
    RoutingRequested,
)
from events.store import StoredEvent
from services.timelines.changes import NOTHING, CustomerChange, Folded, SummaryChange
from services.timelines.rows import CustomerLink, TimelineEntry, utc


def reason_dict(reason: DecisionReason) -> dict[str, Any]:
    return {"rule": reason.rule, "step": reason.step, "score": dict(sorted(reason.score.items()))}


def _compact(values: dict[str, Any]) -> dict[str, Any] | None:
    out = {k: v for k, v in values.items() if v is not None and v != "" and v != [] and v != {}}
    return out or None


def fold(stored: StoredEvent) -> Folded:
    """The rows one stored event writes: a timeline entry, a change to its conversation's
    summary, a change to its customer's summary. Events that are not customer/conversation
    facts (agent events, UnknownEvent from a newer writer) write nothing."""
    out = _fold(stored)
    ev = stored.event
    if not isinstance(ev, CustomerEvent):
        return out
    base: dict[str, Any] = {"customer_id": ev.customer_id, "seq": stored.seq, "at": utc(ev.at)}
    match ev:
        case CustomerCreated():
            customer = CustomerChange(**base, identity=ev.identity, created=True, activity=True)
        case IdentityLinked():
            customer = CustomerChange(**base, identity=ev.identity)
        case CustomerProfileUpdated():
            profile = {
                "tier": ev.tier,
                "flags": list(ev.flags),
                "preferred_language": ev.preferred_language,
                "crm_id": ev.crm_id,
            }
            customer = CustomerChange(**base, profile=profile)
        case ConversationOpened():
            customer = CustomerChange(**base, conversations=1, activity=True)
        case _:
            if out.change is None or not out.change.activity:
                return out
            customer = CustomerChange(**base, activity=True)
    return msgspec.structs.replace(out, customer=customer)


def _fold(stored: StoredEvent) -> Folded:
    ev = stored.event
    if not isinstance(ev, CustomerEvent):  # agent events, UnknownEvent
        return NOTHING
    seq = stored.seq
    customer_id = ev.customer_id
    at = utc(ev.at)
    conversation_id = ev.conversation_id if isinstance(ev, ConversationEvent) else None

    def entry(kind: str, **fields: Any) -> TimelineEntry:
        return TimelineEntry(
            customer_id=customer_id, seq=seq, conversation_id=conversation_id, at=at, kind=kind, **fields
        )

    def change(**fields: Any) -> SummaryChange:
        assert conversation_id is not None
        return SummaryChange(conversation_id=conversation_id, customer_id=customer_id, seq=seq, at=at, **fields)

    match ev:
        case CustomerErased():
            # The customer and everyone merged into it: their rows are redacted where they
            # stand (``redact``), here and in every rebuild.
            erased = tuple(dict.fromkeys([customer_id, *ev.merged_ids]))
            return Folded(
                entry=entry(
                    "customer_erased", detail=_compact({"actor": ev.actor, "merged_ids": sorted(ev.merged_ids)})
                ),
                erased=erased,
            )
        case CustomersMerged():
            # customer_id is the survivor; a merge into itself is refused upstream, and skipped here.
            if not ev.merged_id or ev.merged_id == customer_id:
                return NOTHING
            return Folded(
                entry=entry("customers_merged", detail=_compact({"merged_id": ev.merged_id, "actor": ev.actor})),
                link=CustomerLink(merged_id=ev.merged_id, survivor_id=customer_id, seq=seq),
            )
        case IdentityLinked():
            return Folded(entry=entry("identity_linked", detail=_compact({"identity": ev.identity, "actor": ev.actor})))
        case CustomerCreated():
            kind_channel = ev.identity.partition(":")[0]
            return Folded(
                entry=entry(
                    "customer_created",
                    channel=kind_channel if kind_channel in CHANNELS else None,
                    detail={"identity": ev.identity},
                )
            )
        case CustomerProfileUpdated():
            return Folded(
                entry=entry(
                    "profile_updated",
                    detail=_compact(
                        {
                            "tier": ev.tier,
                            "flags": list(ev.flags),
                            "preferred_language": ev.preferred_language,
                            "crm_id": ev.crm_id,
                            "actor": ev.actor,
                        }
                    ),
                )
            )
        case ConversationOpened():
            return Folded(
                entry=entry(
                    "opened",
                    channel=ev.channel,
                    # The platform of an outbound-first conversation (WhatsApp on Twilio or the Cloud
                    # API) before the customer answers: the console offers templates only by it.
                    detail=_compact(
                        {"contact": ev.contact, "public": ev.public or None, "platform": ev.metadata.get("platform")}
                    ),
                ),
                change=change(channel=ev.channel, status="waiting", opened=True),
            )
        case MessageReceived():
            attachments = [msgspec.to_builtins(a) for a in ev.attachments]
            return Folded(
                entry=entry(
                    "message_in",
                    channel=ev.channel,
                    direction="in",
                    message_id=ev.message_id,
                    text=ev.text,
                    # The platform tells WhatsApp from SMS on one Twilio channel, and
                    # Messenger from Instagram on social.
                    # ``subject``: an email's Subject (personal, erased like the text).
                    detail=_compact(
                        {
                            "language": ev.language,
                            "platform": ev.metadata.get("platform"),
                            "subject": ev.metadata.get("subject"),
                            "attachments": attachments,
                        }
                    ),
                ),
                change=change(channel=ev.channel, messages=1),
            )
        case RoutingRequested():
            req = ev.requirements
            return Folded(
                entry=entry(
                    "routing_requested",
                    channel=ev.channel,
                    detail=_compact(
                        {
                            "skills": dict(sorted(req.skills.items())),
                            "language": req.language,
                            "min_tier": req.min_tier,
                            "priority": req.priority,
                            "preferred_agent": req.preferred_agent,
                            "excluded_agents": list(req.excluded_agents),
                            # Why this language: each piece of evidence and its weight (intake).
                            "language_reason": msgspec.to_builtins(ev.language_reason) if ev.language_reason else None,
                        }
                    ),
                ),
                change=change(
                    channel=ev.channel,
                    activity=False,
                    priority=req.priority,
                    sla_due=None if req.sla_due is None else utc(req.sla_due),
                ),
            )
        case AgentOffered():
            return Folded(
                entry=entry(
                    "offered",
                    agent_id=ev.agent_id,
                    reason=reason_dict(ev.reason),
                    detail={"expires_at": msgspec.to_builtins(utc(ev.expires_at))},
                ),
                change=change(status="offered", agent_id=ev.agent_id, last_reason=reason_dict(ev.reason)),
            )
        case OfferAccepted():
            return Folded(
                entry=entry("offer_accepted", agent_id=ev.agent_id, detail=_compact({"actor": ev.actor})),
                change=change(status="assigned", agent_id=ev.agent_id, assigned=True),
            )
        case OfferDeclined():
            return Folded(
                entry=entry("offer_declined", agent_id=ev.agent_id, detail=_compact({"actor": ev.actor})),
                change=change(status="waiting", agent_id=None, declined=1),
            )
        case OfferExpired():
            return Folded(
                entry=entry("offer_expired", agent_id=ev.agent_id),
                change=change(status="waiting", agent_id=None, expired=1),
            )
        case ConversationAssigned():
            return Folded(
                entry=entry("assigned", channel=ev.channel, agent_id=ev.agent_id, reason=reason_dict(ev.reason)),
                change=change(
                    channel=ev.channel,
                    status="assigned",
                    agent_id=ev.agent_id,
                    last_reason=reason_dict(ev.reason),
                    assigned=True,
                ),
            )
        case EscalationStepReached():
            return Folded(
                entry=entry("escalation_step", detail={"step": ev.step, "relaxation": ev.relaxation}),
                change=change(activity=False),
            )
        case ConversationTransferred():
            return Folded(
                entry=entry(
                    "transferred",
                    agent_id=ev.from_agent,
                    detail=_compact(
                        {
                            "from_agent": ev.from_agent,
                            "to_agent": ev.to_agent,
                            "to_skill": ev.to_skill,
                            "to_tier": ev.to_tier,
                            "transfer_count": ev.transfer_count,
                            "actor": ev.actor,
                            "note": ev.note,
                        }
                    ),
                ),
                change=change(status="waiting", agent_id=None, transfers=1),
            )
        case ConversationEscalated():
            return Folded(
                entry=entry(
                    "escalated",
                    agent_id=ev.from_agent,
                    detail=_compact({"to_tier": ev.to_tier, "reason": ev.reason, "actor": ev.actor}),
                ),
                change=change(status="waiting", agent_id=None),
            )
        case ConversationLanguageChanged():
            detail = {"language": ev.language, "previous": ev.previous, "reason": msgspec.to_builtins(ev.reason)}
            return Folded(entry=entry("language_changed", detail=_compact(detail)), change=change(activity=False))
        case ConversationReleased():
            return Folded(
                entry=entry("released", agent_id=ev.agent_id, detail=_compact({"reason": ev.reason})),
                change=change(status="waiting", agent_id=None),
            )
        case ConversationResolved():
            return Folded(
                entry=entry("resolved", agent_id=ev.agent_id, detail=_compact({"actor": ev.actor})),
                change=change(status="resolved", resolved=True),
            )
        case ReplyRequested():
            return Folded(
                entry=entry(
                    "message_out",
                    channel=ev.channel,
                    direction="out",
                    agent_id=ev.agent_id,
                    message_id=ev.reply_id,
                    text=ev.text,
                    detail=_compact({"actor": ev.actor}),
                ),
                change=change(channel=ev.channel, messages=1, responded=True),
            )
        case NoteAdded():
            # An internal note: on the timeline for the team, never a message (no direction,
            # not counted); erasure redacts its text like a message body.
            return Folded(
                entry=entry(
                    "note",
                    agent_id=ev.agent_id,
                    message_id=ev.note_id,
                    text=ev.text,
                    detail=_compact({"actor": ev.actor}),
                ),
                change=change(activity=False),
            )
        case MessageSent():
            return Folded(
                entry=entry(
                    "message_sent",
                    channel=ev.channel,
                    direction="out",
                    message_id=ev.reply_id,
                    detail=_compact({"provider_message_id": ev.provider_message_id}),
                ),
                change=change(channel=ev.channel, activity=False),
            )
        case DeliveryFailed():
            return Folded(
                entry=entry(
                    "delivery_failed",
                    channel=ev.channel,
                    direction="out",
                    message_id=ev.reply_id,
                    detail={"reason": ev.reason},
                ),
                change=change(channel=ev.channel, activity=False),
            )
    return NOTHING
