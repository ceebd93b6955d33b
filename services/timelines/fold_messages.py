"""The per-event fold of a conversation's messages, replies and notes (``fold_event``
dispatches to them by class, beside ``fold_conversation``'s routing and lifecycle folds).
Pure: no I/O, no clock. Each builds its entry and summary change in place (see
``fold_conversation.entry_of``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from events.model import DeliveryFailed, MessageReceived, MessageSent, NoteAdded, ReplyRequested
from services.timelines.changes import Folded, SummaryChange
from services.timelines.fold_conversation import Fold, actor_detail, compact, conversation_rows, entry_of


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
    return conversation_rows(
        entry,
        SummaryChange(
            conversation_id=ev.conversation_id,
            customer_id=ev.customer_id,
            seq=seq,
            at=at,
            channel=ev.channel,
            messages=1,
        ),
    )


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
    return conversation_rows(
        entry,
        SummaryChange(
            conversation_id=ev.conversation_id,
            customer_id=ev.customer_id,
            seq=seq,
            at=at,
            channel=ev.channel,
            messages=1,
            responded=True,
        ),
    )


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
    return Folded(
        entry=entry,
        change=SummaryChange(
            conversation_id=ev.conversation_id,
            customer_id=ev.customer_id,
            seq=seq,
            at=at,
            activity=False,
        ),
    )


def _message_sent(ev: MessageSent, seq: int, at: datetime) -> Folded:
    return _reply_outcome(ev, seq, at, "message_sent", compact({"provider_message_id": ev.provider_message_id}))


def _delivery_failed(ev: DeliveryFailed, seq: int, at: datetime) -> Folded:
    return _reply_outcome(ev, seq, at, "delivery_failed", {"reason": ev.reason})


def _reply_outcome(ev: MessageSent | DeliveryFailed, seq: int, at: datetime, kind: str, detail: Any) -> Folded:
    """What became of a reply: on the timeline, not a message of its own (not counted)."""
    entry = entry_of(
        ev,
        seq,
        at,
        kind,
        ev.conversation_id,
        channel=ev.channel,
        direction="out",
        message_id=ev.reply_id,
        detail=detail,
    )
    return Folded(
        entry=entry,
        change=SummaryChange(
            conversation_id=ev.conversation_id,
            customer_id=ev.customer_id,
            seq=seq,
            at=at,
            channel=ev.channel,
            activity=False,
        ),
    )


MESSAGE_FOLDS: dict[type, Fold] = {
    MessageReceived: _message_received,
    ReplyRequested: _reply_requested,
    NoteAdded: _note,
    MessageSent: _message_sent,
    DeliveryFailed: _delivery_failed,
}
