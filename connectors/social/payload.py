"""Meta webhook payloads (Messenger, Instagram, WhatsApp Cloud API) → ``InboundMessage``s.

Pure: no I/O; the clock is passed in. One POST may batch many entries (up to 1000 updates);
each customer message becomes one ``InboundMessage`` with the provider's id (``mid`` /
``wamid`` / comment id) as ``provider_message_id``, so ``Nats-Msg-Id: social:<id>`` makes a
retried delivery one event. Echoes of our own sends, WhatsApp delivery receipts
(``statuses``), read/delivery receipts and reactions are counted, never published.

Structural problems (not a JSON object, no ``object``/``entry`` list) raise ``Malformed``
(400). A single item Meta might have extended or that lacks an id is skipped and counted, so
one odd item cannot make Meta retry (and eventually disable) a whole batch of good messages.

Metadata every message carries (what a reply needs, see ``connector.MetaConnector.deliver``):

``platform``        ``messenger`` | ``instagram`` | ``whatsapp`` | ``facebook`` (page feed)
``kind``            ``message`` (private) | ``comment`` | ``post`` (public)
``page_id``         Messenger: the Page id; Instagram: the IG account id (``entry.id``)
``phone_number_id`` WhatsApp: the business number the customer wrote to
``comment_id``      public items: the comment (or post) to answer
``post_id`` / ``media_id``  public items: the post / IG media commented on
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from connectors.sdk import Malformed
from events.model import Attachment, Channel, InboundMessage

# What an agent reads for a message the provider could not show us (``metadata.unsupported``).
UNSUPPORTED_TEXT = "(The customer sent a message this channel cannot show.)"
CHANNEL: Channel = "social"
PROVIDER = "meta"

# Messenger/IG attachment types → a coarse MIME type.
_MEDIA = {"image": "image/*", "video": "video/*", "audio": "audio/*", "file": "application/octet-stream"}
# WhatsApp message types carrying a media object ({id, mime_type, caption?, filename?}).
_WA_MEDIA = ("image", "video", "audio", "document", "sticker")
# A provider timestamp further than this in the future is not trusted (clock skew).
_FUTURE_SLACK = timedelta(minutes=5)


@dataclass
class ParsedBatch:
    messages: list[InboundMessage] = field(default_factory=list)
    # Not published: echo, status, receipt, reaction, own_post, ignored_field, skipped, batch_duplicate…
    counts: Counter[str] = field(default_factory=Counter)
    # WhatsApp delivery receipts: (wamid of our message, status), for logs.
    statuses: list[tuple[str, str]] = field(default_factory=list)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _text(value: Any) -> str:
    """Message text as sent (not stripped)."""
    return value if isinstance(value, str) else ""


def _when(value: Any, now: datetime, *, millis: bool) -> datetime:
    """A provider timestamp (epoch ms for Messenger/IG, epoch s — often a string — for
    WhatsApp and feed changes) as an aware datetime; ``now`` when absent, bad or in the future."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return now
    if millis:
        number /= 1000.0
    try:
        at = datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return now
    return now if at > now + _FUTURE_SLACK else at


class PayloadParser:
    def __init__(self, graph_media_base: str = "") -> None:
        # e.g. "https://graph.facebook.com/v21.0": WhatsApp media ids become URLs under it.
        self.graph_media_base = graph_media_base.rstrip("/")

    def parse(self, payload: Any, now: datetime) -> ParsedBatch:
        if not isinstance(payload, dict):
            raise Malformed("body is not a JSON object")
        kind = payload.get("object")
        entries = payload.get("entry")
        if not isinstance(kind, str) or not kind:
            raise Malformed("object is missing")
        if not isinstance(entries, list):
            raise Malformed("entry is not a list")
        if any(not isinstance(e, dict) for e in entries):
            raise Malformed("entry items must be objects")
        batch = ParsedBatch()
        for entry in entries:
            if kind == "page":
                self._page_entry(entry, now, batch)
            elif kind == "instagram":
                self._instagram_entry(entry, now, batch)
            elif kind == "whatsapp_business_account":
                self._whatsapp_entry(entry, now, batch)
            else:
                batch.counts["ignored_object"] += 1
        # The same id twice in one batch: publish it once (JetStream would dedupe it anyway).
        seen: set[str] = set()
        unique: list[InboundMessage] = []
        for message in batch.messages:
            if message.provider_message_id in seen:
                batch.counts["batch_duplicate"] += 1
                continue
            seen.add(message.provider_message_id)
            unique.append(message)
        batch.messages = unique
        return batch

    # -- Messenger and Instagram direct messages -------------------------------------------

    def _page_entry(self, entry: dict[str, Any], now: datetime, batch: ParsedBatch) -> None:
        self._messaging(entry, "messenger", now, batch)
        for change in _list(entry.get("changes")):
            change = _obj(change)
            if change.get("field") == "feed":
                self._feed_change(entry, _obj(change.get("value")), now, batch)
            else:
                batch.counts["ignored_field"] += 1

    def _instagram_entry(self, entry: dict[str, Any], now: datetime, batch: ParsedBatch) -> None:
        self._messaging(entry, "instagram", now, batch)
        for change in _list(entry.get("changes")):
            change = _obj(change)
            if change.get("field") in ("comments", "live_comments"):
                self._ig_comment(entry, _obj(change.get("value")), now, batch)
            else:
                batch.counts["ignored_field"] += 1

    def _messaging(self, entry: dict[str, Any], platform: str, now: datetime, batch: ParsedBatch) -> None:
        page_id = _str(entry.get("id"))
        # `standby`: the app is not the thread owner (handover protocol); same shape.
        for key in ("messaging", "standby"):
            for event in _list(entry.get(key)):
                event = _obj(event)
                message = self._messaging_event(event, page_id, platform, now, batch)
                if message is not None:
                    if key == "standby":
                        message = _with_metadata(message, standby="true")
                    batch.messages.append(message)

    def _messaging_event(
        self, event: dict[str, Any], page_id: str, platform: str, now: datetime, batch: ParsedBatch
    ) -> InboundMessage | None:
        sender = _str(_obj(event.get("sender")).get("id"))
        recipient = _str(_obj(event.get("recipient")).get("id"))
        at = _when(event.get("timestamp"), now, millis=True)
        page = page_id or recipient
        metadata = {"platform": platform, "kind": "message", "page_id": page}
        if "message" in event:
            msg = _obj(event.get("message"))
            if msg.get("is_echo"):
                batch.counts["echo"] += 1  # our own (or another app's) send, echoed back
                return None
            mid = _str(msg.get("mid"))
            if not mid or not sender:
                batch.counts["skipped"] += 1
                return None
            if msg.get("is_deleted"):
                batch.counts["deleted"] += 1
                return None
            attachments = tuple(
                Attachment(
                    url=_str(_obj(a.get("payload")).get("url")) or None,
                    content_type=_MEDIA.get(_str(a.get("type"))),
                    name=_str(a.get("type")) or None,
                )
                for a in map(_obj, _list(msg.get("attachments")))
                if a
            )
            quick = _str(_obj(msg.get("quick_reply")).get("payload"))
            if quick:
                metadata["quick_reply_payload"] = quick
            reply_to = _str(_obj(msg.get("reply_to")).get("mid"))
            text = _text(msg.get("text"))
            if msg.get("is_unsupported") and not text and not attachments:
                text, metadata["unsupported"] = UNSUPPORTED_TEXT, "1"  # said, not an empty message
            return InboundMessage(
                at=at,
                channel=CHANNEL,
                provider=PROVIDER,
                provider_message_id=mid,
                sender=sender,
                recipient=recipient or page,
                text=text,
                attachments=attachments,
                thread_ref=reply_to or None,
                metadata=metadata,
            )
        if "postback" in event:
            # A button the customer pressed: a customer message in its own right.
            postback = _obj(event.get("postback"))
            if not sender:
                batch.counts["skipped"] += 1
                return None
            mid = _str(postback.get("mid")) or f"postback:{page}:{sender}:{_str(event.get('timestamp'))}"
            payload = _str(postback.get("payload"))
            if payload:
                metadata["postback_payload"] = payload
            return InboundMessage(
                at=at,
                channel=CHANNEL,
                provider=PROVIDER,
                provider_message_id=mid,
                sender=sender,
                recipient=recipient or page,
                text=_str(postback.get("title")),
                metadata=metadata,
            )
        if "message_edit" in event:
            # The customer changed a message they sent: the new words, as a message of their
            # own marking what they edit (found by an audit: dropped, the agent kept the old).
            edit = _obj(event.get("message_edit"))
            mid, text = _str(edit.get("mid")), _text(edit.get("text"))
            if not mid or not sender or not text:
                batch.counts["skipped"] += 1
                return None
            metadata.update(edit_of=mid)
            return InboundMessage(
                at=at,
                channel=CHANNEL,
                provider=PROVIDER,
                provider_message_id=f"{mid}:edit:{_str(edit.get('num_edit')) or '1'}",
                sender=sender,
                recipient=recipient or page,
                text=text,
                thread_ref=mid,
                metadata=metadata,
            )
        if "read" in event or "delivery" in event:
            batch.counts["receipt"] += 1
        elif "reaction" in event:
            batch.counts["reaction"] += 1
        else:
            batch.counts["ignored_event"] += 1  # optin, referral, handover notices…
        return None

    # -- public: Facebook page feed, Instagram comments ------------------------------------

    def _feed_change(self, entry: dict[str, Any], value: dict[str, Any], now: datetime, batch: ParsedBatch) -> None:
        item = value.get("item")
        if item not in ("comment", "post") or value.get("verb", "add") != "add":
            batch.counts["ignored_feed"] += 1  # likes, reactions, edits, removals
            return
        author = _obj(value.get("from"))
        post_id = _str(value.get("post_id"))
        parent = _str(value.get("parent_id"))
        _public_item(
            batch,
            platform="facebook",
            kind=item,
            owner_id=_str(entry.get("id")),
            sender=_str(author.get("id")),
            sender_name=_str(author.get("name")),
            item_id=_str(value.get("comment_id")) if item == "comment" else post_id,
            text=_text(value.get("message")),
            at=_when(value.get("created_time"), now, millis=False),
            thread_ref=post_id,
            extra={"post_id": post_id, "parent_id": parent if parent != post_id else ""},
        )

    def _ig_comment(self, entry: dict[str, Any], value: dict[str, Any], now: datetime, batch: ParsedBatch) -> None:
        author = _obj(value.get("from"))
        media_id = _str(_obj(value.get("media")).get("id"))
        _public_item(
            batch,
            platform="instagram",
            kind="comment",
            owner_id=_str(entry.get("id")),
            sender=_str(author.get("id")),
            sender_name=_str(author.get("username")),
            item_id=_str(value.get("id")),
            text=_text(value.get("text")),
            at=_when(entry.get("time"), now, millis=False),
            thread_ref=media_id,
            extra={"media_id": media_id, "parent_id": _str(value.get("parent_id"))},
        )

    # -- WhatsApp Cloud API ------------------------------------------------------------------

    def _whatsapp_entry(self, entry: dict[str, Any], now: datetime, batch: ParsedBatch) -> None:
        for change in _list(entry.get("changes")):
            change = _obj(change)
            if change.get("field") != "messages":
                batch.counts["ignored_field"] += 1
                continue
            value = _obj(change.get("value"))
            meta = _obj(value.get("metadata"))
            phone_number_id = _str(meta.get("phone_number_id"))
            display = _str(meta.get("display_phone_number"))
            names = {
                _str(c.get("wa_id")): _str(_obj(c.get("profile")).get("name"))
                for c in map(_obj, _list(value.get("contacts")))
            }
            for status in map(_obj, _list(value.get("statuses"))):
                batch.counts["status"] += 1
                batch.statuses.append((_str(status.get("id")), _str(status.get("status"))))
            for msg in map(_obj, _list(value.get("messages"))):
                message = self._whatsapp_message(msg, phone_number_id, display, names, now, batch)
                if message is not None:
                    batch.messages.append(message)

    def _whatsapp_message(
        self,
        msg: dict[str, Any],
        phone_number_id: str,
        display: str,
        names: Mapping[str, str],
        now: datetime,
        batch: ParsedBatch,
    ) -> InboundMessage | None:
        wamid = _str(msg.get("id"))
        digits = "".join(ch for ch in _str(msg.get("from")) if ch.isdigit())
        if not wamid or not digits or not phone_number_id:
            batch.counts["skipped"] += 1
            return None
        kind = _str(msg.get("type"))
        text = ""
        attachments: tuple[Attachment, ...] = ()
        metadata = {"platform": "whatsapp", "kind": "message", "phone_number_id": phone_number_id, "type": kind}
        if kind == "text":
            text = _text(_obj(msg.get("text")).get("body"))
        elif kind in _WA_MEDIA:
            media = _obj(msg.get(kind))
            media_id = _str(media.get("id"))
            text = _text(media.get("caption"))
            attachments = (
                Attachment(
                    url=f"{self.graph_media_base}/{media_id}" if media_id and self.graph_media_base else None,
                    content_type=_str(media.get("mime_type")) or None,
                    name=_str(media.get("filename")) or kind,
                    sha256=_str(media.get("sha256")) or None,
                ),
            )
        elif kind == "interactive":
            interactive = _obj(msg.get("interactive"))
            choice = _obj(interactive.get("button_reply")) or _obj(interactive.get("list_reply"))
            text = _str(choice.get("title"))
            if choice.get("id"):
                metadata["reply_payload"] = _str(choice.get("id"))
        elif kind == "button":
            button = _obj(msg.get("button"))
            text = _str(button.get("text"))
            if button.get("payload"):
                metadata["reply_payload"] = _str(button.get("payload"))
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
        context = _obj(msg.get("context"))
        sender = "+" + digits  # E.164: resolves in the phone identity space shared with SMS
        return InboundMessage(
            at=_when(msg.get("timestamp"), now, millis=False),
            channel=CHANNEL,
            provider=PROVIDER,
            provider_message_id=wamid,
            sender=sender,
            recipient=phone_number_id,
            text=text,
            sender_name=names.get(digits) or None,
            attachments=attachments,
            thread_ref=_str(context.get("id")) or None,
            metadata=metadata,
        )


def _with_metadata(message: InboundMessage, **extra: str) -> InboundMessage:
    return msgspec.structs.replace(message, metadata={**message.metadata, **extra})


def _public_item(
    batch: ParsedBatch,
    *,
    platform: str,
    kind: str,
    owner_id: str,
    sender: str,
    sender_name: str,
    item_id: str,
    text: str,
    at: datetime,
    thread_ref: str,
    extra: dict[str, str],
) -> None:
    """A public post or comment (Facebook page feed, Instagram): its own public conversation,
    unless it is the page's own or lacks an author or id."""
    if not sender or not item_id:
        batch.counts["skipped"] += 1
        return
    if sender == owner_id:
        batch.counts["own_post"] += 1  # the page's own posts and replies
        return
    metadata = {"platform": platform, "kind": kind, "page_id": owner_id, "comment_id": item_id}
    metadata.update({key: value for key, value in extra.items() if value})
    batch.messages.append(
        InboundMessage(
            at=at,
            channel=CHANNEL,
            provider=PROVIDER,
            provider_message_id=item_id,
            sender=sender,
            recipient=owner_id,
            text=text,
            sender_name=sender_name or None,
            thread_ref=thread_ref or None,
            public=True,
            metadata=metadata,
        )
    )
