"""Meta webhook payloads (Messenger, Instagram, WhatsApp Cloud API) → ``InboundMessage``s.

Pure: no I/O; the clock is passed in. One POST may batch many entries (up to 1000 updates);
each customer message becomes one ``InboundMessage`` with the provider's id (``mid`` /
``wamid`` / comment id) as ``provider_message_id``, so ``Nats-Msg-Id: social:<id>`` makes a
retried delivery one event. Echoes of our own sends, WhatsApp delivery receipts
(``statuses``), read/delivery receipts and reactions are counted, never published.

Structural problems (not a JSON object, no ``object``/``entry`` list) raise ``Malformed``
(400). A single item Meta might have extended or that lacks an id is skipped and counted, so
one odd item cannot make Meta retry (and eventually disable) a whole batch of good messages.

Here: the batch's dispatch, Messenger and Instagram direct messages, public items (page feed,
Instagram comments). WhatsApp Cloud API changes are ``whatsapp_payload``; the batch, the fields
every message shares and Meta's JSON read leniently are ``batch``.

Metadata every message carries (what a reply needs, see ``connector.MetaConnector.deliver``):

``platform``        ``messenger`` | ``instagram`` | ``whatsapp`` | ``facebook`` (page feed)
``kind``            ``message`` (private) | ``comment`` | ``post`` (public)
``page_id``         Messenger: the Page id; Instagram: the IG account id (``entry.id``)
``phone_number_id`` WhatsApp: the business number the customer wrote to
``comment_id``      public items: the comment (or post) to answer
``post_id`` / ``media_id``  public items: the post / IG media commented on
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from connectors.sdk import Malformed
from connectors.sdk.publish import unusable_message_id
from events.model import Attachment, InboundMessage

from .batch import (
    CHANNEL,
    PROVIDER,
    UNSUPPORTED_TEXT,
    ParsedBatch,
    as_list,
    as_obj,
    as_str,
    as_text,
    provider_at,
)
from .whatsapp_payload import whatsapp_entry

# Messenger/IG attachment types → a coarse MIME type.
_MEDIA = {"image": "image/*", "video": "video/*", "audio": "audio/*", "file": "application/octet-stream"}


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
                whatsapp_entry(entry, now, batch, self.graph_media_base)
            else:
                batch.counts["ignored_object"] += 1
        # The same id twice in one batch: publish it once (JetStream would dedupe it anyway).
        seen: set[str] = set()
        unique: list[InboundMessage] = []
        for message in batch.messages:
            if unusable_message_id(message.provider_message_id):
                # An id the bus cannot carry (control characters, thousands of characters) is
                # one odd item: skipped and counted, the rest of the batch goes (the SDK would
                # refuse the whole POST, and Meta retry it, good messages and all, for 36 h).
                batch.counts["bad_id"] += 1
                continue
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
        for change in as_list(entry.get("changes")):
            change = as_obj(change)
            if change.get("field") == "feed":
                self._feed_change(entry, as_obj(change.get("value")), now, batch)
            else:
                batch.counts["ignored_field"] += 1

    def _instagram_entry(self, entry: dict[str, Any], now: datetime, batch: ParsedBatch) -> None:
        self._messaging(entry, "instagram", now, batch)
        for change in as_list(entry.get("changes")):
            change = as_obj(change)
            if change.get("field") in ("comments", "live_comments"):
                self._ig_comment(entry, as_obj(change.get("value")), now, batch)
            else:
                batch.counts["ignored_field"] += 1

    def _messaging(self, entry: dict[str, Any], platform: str, now: datetime, batch: ParsedBatch) -> None:
        page_id = as_str(entry.get("id"))
        # `standby`: the app is not the thread owner (handover protocol); same shape.
        for key in ("messaging", "standby"):
            for event in as_list(entry.get(key)):
                event = as_obj(event)
                message = self._messaging_event(event, page_id, platform, now, batch)
                if message is not None:
                    if key == "standby":
                        message = _with_metadata(message, standby="true")
                    batch.messages.append(message)

    def _messaging_event(
        self, event: dict[str, Any], page_id: str, platform: str, now: datetime, batch: ParsedBatch
    ) -> InboundMessage | None:
        sender = as_str(as_obj(event.get("sender")).get("id"))
        recipient = as_str(as_obj(event.get("recipient")).get("id"))
        at = now  # when we received it; Meta's own time is metadata (``provider_at``)
        page = page_id or recipient
        metadata = {"platform": platform, "kind": "message", "page_id": page}
        if sent := provider_at(event.get("timestamp"), millis=True):
            metadata["provider_at"] = sent
        if "message" in event:
            msg = as_obj(event.get("message"))
            if msg.get("is_echo"):
                batch.counts["echo"] += 1  # our own (or another app's) send, echoed back
                return None
            mid = as_str(msg.get("mid"))
            if not mid or not sender:
                batch.counts["skipped"] += 1
                return None
            if msg.get("is_deleted"):
                batch.counts["deleted"] += 1
                return None
            attachments = tuple(
                Attachment(
                    url=as_str(as_obj(a.get("payload")).get("url")) or None,
                    content_type=_MEDIA.get(as_str(a.get("type"))),
                    name=as_str(a.get("type")) or None,
                )
                for a in map(as_obj, as_list(msg.get("attachments")))
                if a
            )
            quick = as_str(as_obj(msg.get("quick_reply")).get("payload"))
            if quick:
                metadata["quick_reply_payload"] = quick
            reply_to = as_str(as_obj(msg.get("reply_to")).get("mid"))
            text = as_text(msg.get("text"))
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
            postback = as_obj(event.get("postback"))
            if not sender:
                batch.counts["skipped"] += 1
                return None
            mid = as_str(postback.get("mid")) or f"postback:{page}:{sender}:{as_str(event.get('timestamp'))}"
            payload = as_str(postback.get("payload"))
            if payload:
                metadata["postback_payload"] = payload
            return InboundMessage(
                at=at,
                channel=CHANNEL,
                provider=PROVIDER,
                provider_message_id=mid,
                sender=sender,
                recipient=recipient or page,
                text=as_str(postback.get("title")),
                metadata=metadata,
            )
        if "message_edit" in event:
            # The customer changed a message they sent: the new words, as a message of their
            # own marking what they edit (found by an audit: dropped, the agent kept the old).
            edit = as_obj(event.get("message_edit"))
            mid, text = as_str(edit.get("mid")), as_text(edit.get("text"))
            if not mid or not sender or not text:
                batch.counts["skipped"] += 1
                return None
            metadata.update(edit_of=mid)
            return InboundMessage(
                at=at,
                channel=CHANNEL,
                provider=PROVIDER,
                provider_message_id=f"{mid}:edit:{as_str(edit.get('num_edit')) or '1'}",
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
        author = as_obj(value.get("from"))
        post_id = as_str(value.get("post_id"))
        parent = as_str(value.get("parent_id"))
        _public_item(
            batch,
            platform="facebook",
            kind=item,
            owner_id=as_str(entry.get("id")),
            sender=as_str(author.get("id")),
            sender_name=as_str(author.get("name")),
            item_id=as_str(value.get("comment_id")) if item == "comment" else post_id,
            text=as_text(value.get("message")),
            at=now,
            thread_ref=post_id,
            extra={
                "post_id": post_id,
                "parent_id": parent if parent != post_id else "",
                "provider_at": provider_at(value.get("created_time"), millis=False),
            },
        )

    def _ig_comment(self, entry: dict[str, Any], value: dict[str, Any], now: datetime, batch: ParsedBatch) -> None:
        author = as_obj(value.get("from"))
        media_id = as_str(as_obj(value.get("media")).get("id"))
        _public_item(
            batch,
            platform="instagram",
            kind="comment",
            owner_id=as_str(entry.get("id")),
            sender=as_str(author.get("id")),
            sender_name=as_str(author.get("username")),
            item_id=as_str(value.get("id")),
            text=as_text(value.get("text")),
            at=now,
            thread_ref=media_id,
            extra={
                "media_id": media_id,
                "parent_id": as_str(value.get("parent_id")),
                "provider_at": provider_at(entry.get("time"), millis=False),
            },
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
