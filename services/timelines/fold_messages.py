"""The per-event fold of a conversation's messages, replies and notes (``fold_event``
dispatches to them by class, beside ``fold_conversation``'s routing and lifecycle folds).
Pure: no I/O, no clock. Each builds its entry and summary change in place (see
``fold_conversation.entry_of``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from events.model import DeliveryFailed, MessageReceived, MessageSent, NoteAdded, ReplyRequested
from services.timelines.changes import CustomerChange, Folded, SummaryChange
from services.timelines.fold_conversation import Fold
from services.timelines.rows import TimelineEntry


def _message_received(ev: MessageReceived, seq: int, at: datetime) -> Folded:
    cid, customer = ev.conversation_id, ev.customer_id
    # The platform tells WhatsApp from SMS on one Twilio channel, and Messenger from Instagram
    # on social. ``subject``: an email's Subject (personal, erased like the text). Written out
    # as ``compact`` would leave it (metadata values are text: kept when not empty).
    detail: dict[str, Any] = {}
    if ev.language:
        detail["language"] = ev.language
    metadata = ev.metadata
    if metadata:
        if platform := metadata.get("platform"):
            detail["platform"] = platform
        if subject := metadata.get("subject"):
            detail["subject"] = subject
    if ev.attachments:
        detail["attachments"] = [msgspec.to_builtins(a) for a in ev.attachments]
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="message_in",
        channel=ev.channel,
        direction="in",
        message_id=ev.message_id,
        text=ev.text,
        detail=detail or None,
    )
    change = SummaryChange(conversation_id=cid, customer_id=customer, seq=seq, at=at, channel=ev.channel, messages=1)
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _reply_requested(ev: ReplyRequested, seq: int, at: datetime) -> Folded:
    cid, customer, actor = ev.conversation_id, ev.customer_id, ev.actor
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="message_out",
        channel=ev.channel,
        direction="out",
        agent_id=ev.agent_id,
        message_id=ev.reply_id,
        text=ev.text,
        detail={"actor": actor} if actor else None,
    )
    change = SummaryChange(
        conversation_id=cid, customer_id=customer, seq=seq, at=at, channel=ev.channel, messages=1, responded=True
    )
    return Folded(
        entry=entry, change=change, customer=CustomerChange(customer_id=customer, seq=seq, at=at, activity=True)
    )


def _note(ev: NoteAdded, seq: int, at: datetime) -> Folded:
    # An internal note: on the timeline for the team, never a message (no direction, not
    # counted); erasure redacts its text like a message body.
    cid, customer, actor = ev.conversation_id, ev.customer_id, ev.actor
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind="note",
        agent_id=ev.agent_id,
        message_id=ev.note_id,
        text=ev.text,
        detail={"actor": actor} if actor else None,
    )
    return Folded(
        entry=entry, change=SummaryChange(conversation_id=cid, customer_id=customer, seq=seq, at=at, activity=False)
    )


def _message_sent(ev: MessageSent, seq: int, at: datetime) -> Folded:
    provider_id = ev.provider_message_id
    return _reply_outcome(ev, seq, at, "message_sent", {"provider_message_id": provider_id} if provider_id else None)


def _delivery_failed(ev: DeliveryFailed, seq: int, at: datetime) -> Folded:
    return _reply_outcome(ev, seq, at, "delivery_failed", {"reason": ev.reason})


def _reply_outcome(ev: MessageSent | DeliveryFailed, seq: int, at: datetime, kind: str, detail: Any) -> Folded:
    """What became of a reply: on the timeline, not a message of its own (not counted)."""
    cid, customer = ev.conversation_id, ev.customer_id
    entry = TimelineEntry(
        customer_id=customer,
        seq=seq,
        conversation_id=cid,
        at=at,
        kind=kind,
        channel=ev.channel,
        direction="out",
        message_id=ev.reply_id,
        detail=detail,
    )
    return Folded(
        entry=entry,
        change=SummaryChange(
            conversation_id=cid, customer_id=customer, seq=seq, at=at, channel=ev.channel, activity=False
        ),
    )


MESSAGE_FOLDS: dict[type, Fold] = {
    MessageReceived: _message_received,
    ReplyRequested: _reply_requested,
    NoteAdded: _note,
    MessageSent: _message_sent,
    DeliveryFailed: _delivery_failed,
}
