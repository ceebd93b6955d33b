"""WhatsApp Cloud API webhook changes (``object: whatsapp_business_account``) →
``InboundMessage``s: one per customer message, its ``wamid`` as ``provider_message_id``.

Pure: no I/O; the clock is passed in. The sender is the customer's number in E.164 (``+`` and
digits), so it resolves in the phone identity space shared with SMS. Reactions and system
notices are counted, never published; delivery receipts (``statuses``) are counted and kept for
logs. Metadata: ``platform`` ``whatsapp``, ``kind`` ``message``, ``phone_number_id`` (the
business number the customer wrote to), ``type`` (WhatsApp's message type).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from events.model import Attachment, InboundMessage

from .batch import CHANNEL, PROVIDER, UNSUPPORTED_TEXT, ParsedBatch, as_list, as_obj, as_str, as_text, provider_at

# WhatsApp message types carrying a media object ({id, mime_type, caption?, filename?}).
_WA_MEDIA = ("image", "video", "audio", "document", "sticker")


def whatsapp_entry(entry: dict[str, Any], now: datetime, batch: ParsedBatch, graph_media_base: str) -> None:
    """One ``whatsapp_business_account`` entry: its customers' messages into ``batch``; delivery
    receipts (``statuses``) counted and kept for logs. ``graph_media_base`` (no trailing ``/``):
    media ids become URLs under it, none when it is empty."""
    for change in as_list(entry.get("changes")):
        change = as_obj(change)
        if change.get("field") != "messages":
            batch.counts["ignored_field"] += 1
            continue
        value = as_obj(change.get("value"))
        meta = as_obj(value.get("metadata"))
        phone_number_id = as_str(meta.get("phone_number_id"))
        display = as_str(meta.get("display_phone_number"))
        names = {
            as_str(c.get("wa_id")): as_str(as_obj(c.get("profile")).get("name"))
            for c in map(as_obj, as_list(value.get("contacts")))
        }
        for status in map(as_obj, as_list(value.get("statuses"))):
            batch.counts["status"] += 1
            batch.statuses.append((as_str(status.get("id")), as_str(status.get("status"))))
        for msg in map(as_obj, as_list(value.get("messages"))):
            message = _whatsapp_message(msg, phone_number_id, display, names, now, batch, graph_media_base)
            if message is not None:
                batch.messages.append(message)


def _whatsapp_message(
    msg: dict[str, Any],
    phone_number_id: str,
    display: str,
    names: Mapping[str, str],
    now: datetime,
    batch: ParsedBatch,
    graph_media_base: str,
) -> InboundMessage | None:
    wamid = as_str(msg.get("id"))
    digits = "".join(ch for ch in as_str(msg.get("from")) if ch.isdigit())
    if not wamid or not digits or not phone_number_id:
        batch.counts["skipped"] += 1
        return None
    kind = as_str(msg.get("type"))
    text = ""
    attachments: tuple[Attachment, ...] = ()
    metadata = {"platform": "whatsapp", "kind": "message", "phone_number_id": phone_number_id, "type": kind}
    if kind == "text":
        text = as_text(as_obj(msg.get("text")).get("body"))
    elif kind in _WA_MEDIA:
        media = as_obj(msg.get(kind))
        media_id = as_str(media.get("id"))
        text = as_text(media.get("caption"))
        attachments = (
            Attachment(
                url=f"{graph_media_base}/{media_id}" if media_id and graph_media_base else None,
                content_type=as_str(media.get("mime_type")) or None,
                name=as_str(media.get("filename")) or kind,
                sha256=as_str(media.get("sha256")) or None,
            ),
        )
    elif kind == "interactive":
        interactive = as_obj(msg.get("interactive"))
        choice = as_obj(interactive.get("button_reply")) or as_obj(interactive.get("list_reply"))
        text = as_str(choice.get("title"))
        if choice.get("id"):
            metadata["reply_payload"] = as_str(choice.get("id"))
    elif kind == "button":
        button = as_obj(msg.get("button"))
        text = as_str(button.get("text"))
        if button.get("payload"):
            metadata["reply_payload"] = as_str(button.get("payload"))
    elif kind == "reaction":
        batch.counts["reaction"] += 1
        return None
    elif kind == "unsupported":
        # The customer wrote (a poll, a view-once message…), Meta cannot show what: they
        # still reached out, so it is on the timeline and routed (found by an audit: dropped).
        text = UNSUPPORTED_TEXT
        metadata["unsupported"] = "1"
    elif kind in ("system", "request_welcome"):
        batch.counts["ignored_event"] += 1
        return None
    # location, contacts, order…: routed with empty text; agents see the type in metadata.
    if display:
        metadata["display_phone_number"] = display
    if sent := provider_at(msg.get("timestamp"), millis=False):
        metadata["provider_at"] = sent  # Meta's time: metadata only, never the message's ``at``
    context = as_obj(msg.get("context"))
    sender = "+" + digits  # E.164: resolves in the phone identity space shared with SMS
    return InboundMessage(
        at=now,
        channel=CHANNEL,
        provider=PROVIDER,
        provider_message_id=wamid,
        sender=sender,
        recipient=phone_number_id,
        text=text,
        sender_name=names.get(digits) or None,
        attachments=attachments,
        thread_ref=as_str(context.get("id")) or None,
        metadata=metadata,
    )
