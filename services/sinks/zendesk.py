"""The Zendesk sink: conversations as Zendesk tickets, agents' public replies back to the customer.

Relaydesk → Zendesk (``handle``, in log order):

- ``ConversationAssigned``: the customer becomes a Zendesk user (``users/create_or_update``,
  ``external_id`` = customer id, name, email or phone), then a ticket is created
  (``external_id`` = conversation id, requester = that user, assignee = the agent's Zendesk
  user from ``agents``, tags: ``relaydesk``, channel, tier, language, skills) with the
  customer's messages so far as comments authored by the requester; a later assignment of the
  same conversation updates the assignee.
- ``MessageReceived``: a public comment authored by the requester (``author_id``).
- ``ReplyRequested`` by an agent in Relaydesk: a public comment authored by the agent's
  Zendesk user. (The customer already has it on their own channel: turn off Zendesk's
  "Notify requester" trigger for tickets tagged ``relaydesk``.)
- ``ConversationResolved`` in Relaydesk: the ticket is solved.
- ``CustomerErased``: the customer's tickets and end user are permanently deleted
  (``zendesk_erasure``; ``on_erasure = "keep"`` leaves them), and no ticket is created for
  them again.

Zendesk → Relaydesk (a webhook subscribed to the ticket events "Comment added" and "Status
changed", signed: ``X-Zendesk-Webhook-Signature`` = base64 HMAC-SHA256(secret, timestamp +
body)):

- a public comment on a linked ticket by the Zendesk user of the Relaydesk agent holding the
  conversation (``agents``) → ``ReplyRequested`` and a ``DeliverReply`` on the customer's own
  channel, once per comment id; one by another staff member is not sent (an internal note on
  the ticket says so);
- status solved or closed → ``ConversationResolved``.

Nothing loops: comments the sink posted are known by id (and by body while the post is in
flight and ten minutes after) and never sent back; a comment write is never retried blind
after a timeout or 5xx (Zendesk may have stored it): the event is tried again and a stored
comment with the same body is adopted instead of posting a second one; customers' comments
(not staff) are not replies; facts the sink appended itself are never synced back to Zendesk
(the SDK skips them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from connectors.sdk.signatures import first_match, hmac_sha256_base64, secret_list, verify_hmac_sha256
from events.model import (
    ConversationAssigned,
    ConversationResolved,
    CustomerErased,
    DeliveryFailed,
    MessageReceived,
    OfferAccepted,
    ReplyRequested,
)

from .sdk import (
    Link,
    ProviderApi,
    Sink,
    SinkEvent,
    SinkSettings,
    Unauthentic,
    WebhookRequest,
    not_delivered,
    numeric_id,
)
from .sdk.actions import ConversationFacts
from .sdk.erasure import is_erased, on_customer_erased
from .sdk.errors import Malformed
from .sdk.state import NOT_SENT
from .zendesk_erasure import erase_customer

SIGNATURE = "X-Zendesk-Webhook-Signature"
SIGNATURE_TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"
COMMENT_ADDED = "zen:event-type:ticket.comment_added"
STATUS_CHANGED = "zen:event-type:ticket.status_changed"
DONE_STATUSES = ("solved", "closed")


class ZendeskSettings(SinkSettings, kw_only=True):
    # https://<subdomain>.zendesk.com, or api_url to point elsewhere (a proxy, a test fake).
    subdomain: str = ""
    api_url: str = ""
    # API token auth: the email of the Zendesk user the token acts as, and the token.
    email: str = ""
    api_token: str = ""
    # The webhook's signing secret (Admin Center → Webhooks → the webhook → Reveal secret).
    webhook_secret: str = ""
    # Also accepted, as a list or comma-separated: the old secret while the webhook's is rotated.
    extra_webhook_secrets: list[str] | str = []
    # A webhook signed longer ago than this (s) is refused as a replay; 0: not checked.
    signature_tolerance: float = 300.0
    # Relaydesk agent id → Zendesk user id (the ticket's assignee, the author of her replies).
    agents: dict[str, int] = {}
    # Added to every ticket's tags.
    tags: list[str] = []
    # The ticket's subject; {channel} and {customer} (the customer's name or id) are filled in.
    subject: str = "Relaydesk {channel} conversation with {customer}"


class ZendeskSink(Sink):
    name: ClassVar[str] = "zendesk"
    Settings: ClassVar[type[SinkSettings]] = ZendeskSettings
    webhook_paths: ClassVar[tuple[str, ...]] = ("/zendesk/webhook",)
    api_settings: ClassVar[tuple[str, ...]] = ("subdomain", "api_url", "email", "api_token")
    handles = (*Sink.handles, CustomerErased)

    settings: ZendeskSettings

    def problems(self) -> list[str]:
        s = self.settings
        out = []
        if not (s.subdomain or s.api_url):
            out.append("set subdomain (acme for acme.zendesk.com) or api_url")
        if not (s.email and s.api_token):
            out.append("set email and api_token (Admin Center → Apps and integrations → Zendesk API)")
        if not s.webhook_secret:
            out.append("set webhook_secret (the signing secret of the Zendesk webhook)")
        return out

    def make_api(self) -> ProviderApi:
        s = self.settings
        return self.basic_auth_api(s.api_url or f"https://{s.subdomain}.zendesk.com", f"{s.email}/token", s.api_token)

    # -- Relaydesk → Zendesk -------------------------------------------------------------------

    async def handle(self, item: SinkEvent) -> None:
        event = item.event
        if isinstance(event, CustomerErased):
            await on_customer_erased(self, event, lambda customer: erase_customer(self, customer))
        elif isinstance(event, ConversationAssigned | OfferAccepted):
            await self._assigned(event)
        elif isinstance(event, MessageReceived):
            link = await self.state.link(event.conversation_id)
            if link is not None and not event.metadata.get("auto"):  # before assignment: at creation
                await self._comment(link, event.message_id, event.text or "(no text)", author=link.requester_id)
        elif isinstance(event, ReplyRequested):
            link = await self.state.link(event.conversation_id)
            if link is not None:
                await self._comment(link, event.reply_id, event.text, author=self._zendesk_user(event.agent_id))
        elif isinstance(event, DeliveryFailed):
            link = await self.state.link(event.conversation_id)
            if link is not None:  # an internal note: the agents see it, the customer does not
                await self._comment(link, f"failed-{event.reply_id}", not_delivered(event), author="", public=False)
        elif isinstance(event, ConversationResolved):
            link = await self.state.link(event.conversation_id)
            if link is not None:
                await self.api.call(
                    "PUT", f"/api/v2/tickets/{link.ticket_id}.json", json={"ticket": {"status": "solved"}}
                )

    def _zendesk_user(self, agent_id: str | None) -> str:
        user = self.settings.agents.get(agent_id or "")
        return str(user) if user else ""

    async def _assigned(self, event: ConversationAssigned | OfferAccepted) -> None:
        assignee = self._zendesk_user(event.agent_id)
        link = await self.state.link(event.conversation_id)
        if link is not None:
            if assignee:
                body = {"ticket": {"assignee_id": int(assignee)}}
                await self.api.call("PUT", f"/api/v2/tickets/{link.ticket_id}.json", json=body)
            return
        if await is_erased(self, event.customer_id):
            return  # a replay of the log: its tickets were deleted with the customer
        facts = await self.relaydesk.conversation(event.customer_id, event.conversation_id)
        if facts is None:
            return
        requester = await self._requester(facts)
        ticket_id = await self._existing_ticket(event.conversation_id)
        first = next((m for m in facts.messages if not m.metadata.get("auto")), None)
        if ticket_id is not None and first is not None:
            await self.state.mark_synced(first.message_id, "", ticket=ticket_id)  # the ticket was created with it
        if ticket_id is None:
            text = (first.text if first else "") or "(no text)"
            ticket: dict[str, Any] = {
                "subject": self.settings.subject.format(
                    channel=facts.channel, customer=facts.customer_name or facts.customer_id
                ),
                "comment": {"body": text, "author_id": int(requester), "public": True},
                "requester_id": int(requester),
                "external_id": event.conversation_id,
                "tags": self._tags(facts),
            }
            if assignee:
                ticket["assignee_id"] = int(assignee)
            # The create carries the conversation id twice: as the ticket's external_id (found
            # again after a crash, above) and as Zendesk's Idempotency-Key.
            answer = await self.api.call(
                "POST",
                "/api/v2/tickets.json",
                json={"ticket": ticket},
                headers={"Idempotency-Key": f"relaydesk-{event.conversation_id}"},
            )
            ticket_id = str(answer["ticket"]["id"])
            await self.state.posted(ticket_id, text, _comment_id(answer))
            if first is not None:
                await self.state.mark_synced(first.message_id, _comment_id(answer), ticket=ticket_id)
        link = Link(
            conversation_id=event.conversation_id,
            customer_id=event.customer_id,
            ticket_id=ticket_id,
            requester_id=requester,
        )
        await self.state.save_link(link)
        for message in facts.messages:
            if not message.metadata.get("auto"):
                await self._comment(link, message.message_id, message.text or "(no text)", author=requester)

    async def _requester(self, facts: ConversationFacts) -> str:
        key = f"user.{facts.customer_id}"
        known = await self.state.get(key)
        if known:
            return known.decode()
        user: dict[str, Any] = {"name": facts.customer_name or facts.contact or facts.customer_id}
        user["external_id"] = facts.customer_id
        user.update(facts.contact_fields())
        if "email" in user:
            user["verified"] = True  # no welcome email
        answer = await self.api.call("POST", "/api/v2/users/create_or_update.json", json={"user": user})
        user_id = str(answer["user"]["id"])
        await self.state.put(key, user_id)
        return user_id

    async def _existing_ticket(self, conversation_id: str) -> str | None:
        """A ticket an earlier run created for this conversation (it crashed before saving the link)."""
        answer = await self.api.call("GET", "/api/v2/tickets.json", params={"external_id": conversation_id})
        tickets = (answer or {}).get("tickets") or []
        return str(tickets[0]["id"]) if tickets else None

    def _tags(self, facts: ConversationFacts) -> list[str]:
        tags = ["relaydesk", f"channel_{facts.channel}", f"tier_{facts.tier}"]
        if facts.language:
            tags.append(f"language_{facts.language}")
        tags += [f"skill_{skill}" for skill in sorted(facts.skills)]
        tags += [f"flag_{flag}" for flag in facts.flags]
        tags += list(self.settings.tags)
        return [_tag(t) for t in tags]

    async def _comment(self, link: Link, item_id: str, text: str, *, author: str, public: bool = True) -> None:
        """One comment for a message, a reply or a reply's failure, once (``synced.<id>``)."""
        if await self.state.synced(item_id, ticket=link.ticket_id):
            return
        comment: dict[str, Any] = {"body": text, "public": public}
        if author:
            comment["author_id"] = int(author)
        if await self.state.posting(link.ticket_id, text):
            # An earlier attempt's answer never came: Zendesk may have stored the comment.
            found = await self._stored_comment(link.ticket_id, text, author)
            if found:
                await self.state.posted(link.ticket_id, text, found)
                await self.state.mark_synced(item_id, found, ticket=link.ticket_id)
                return
        answer = await self.api.call(
            "PUT", f"/api/v2/tickets/{link.ticket_id}.json", json={"ticket": {"comment": comment}}, retry=False
        )
        comment_id = _comment_id(answer)
        await self.state.posted(link.ticket_id, text, comment_id)
        await self.state.mark_synced(item_id, comment_id, ticket=link.ticket_id)

    async def _stored_comment(self, ticket_id: str, text: str, author: str) -> str:
        """The id of a recent comment on the ticket with this body (and author) that no post of
        ours claimed yet, or "" (the newest 100 comments are looked at)."""
        answer = await self.api.call(
            "GET", f"/api/v2/tickets/{ticket_id}/comments.json", params={"sort_order": "desc", "per_page": "100"}
        )
        for comment in (answer or {}).get("comments") or []:
            comment_id = str(comment.get("id") or "")
            if str(comment.get("body") or "").strip() != text.strip():
                continue
            if author and str(comment.get("author_id") or "") != author:
                continue
            if await self.state.adoptable(comment_id, ticket=ticket_id):
                return comment_id
        return ""

    # -- Zendesk → Relaydesk -------------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        signature = request.headers.get(SIGNATURE, "")
        timestamp = request.headers.get(SIGNATURE_TIMESTAMP, "")
        if not signature or not timestamp:
            raise Unauthentic(f"missing {SIGNATURE} or {SIGNATURE_TIMESTAMP}")
        signed = timestamp.encode() + request.body
        keys = [self.settings.webhook_secret, *secret_list(self.settings.extra_webhook_secrets)]
        if first_match(keys, lambda key: verify_hmac_sha256(key, signed, signature, encoding="base64")) is None:
            raise Unauthentic(
                "bad webhook signature: signed with another secret? rotated? list the other in extra_webhook_secrets"
            )
        tolerance = self.settings.signature_tolerance
        if tolerance > 0:
            try:
                signed_at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            except ValueError as err:
                raise Unauthentic("unreadable signature timestamp") from err
            if signed_at.tzinfo is None:
                signed_at = signed_at.replace(tzinfo=UTC)
            if abs((datetime.now(UTC) - signed_at).total_seconds()) > tolerance:
                raise Unauthentic("signature timestamp outside the tolerance (a replay?)")

    async def webhook(self, request: WebhookRequest) -> Mapping[str, Any]:
        payload = request.json()
        if not isinstance(payload, dict):
            raise Malformed("expected a JSON object")
        kind = payload.get("type")
        detail = payload.get("detail")
        event = payload.get("event")
        if not isinstance(kind, str) or not isinstance(detail, dict) or not isinstance(event, dict):
            raise Malformed("expected a Zendesk event webhook: type, detail and event")
        if detail.get("id") in (None, ""):
            raise Malformed("detail.id (the ticket) is missing")
        ticket_id = numeric_id(detail["id"], "detail.id (the ticket)")
        link = await self.state.conversation_of(ticket_id)
        if link is None:
            return {"acted": False, "ignored": "not a Relaydesk ticket"}
        if kind == COMMENT_ADDED:
            return await self._comment_added(link, ticket_id, event)
        if kind == STATUS_CHANGED:
            current = str(event.get("current") or "").lower()
            if current not in DONE_STATUSES:
                return {"acted": False, "ignored": f"status {current}"}
            outcome = await self.resolve(link.conversation_id, key=f"ticket:{ticket_id}:done")
            return {"acted": outcome == "done", "outcome": outcome}
        return {"acted": False, "ignored": f"event type {kind}"}

    async def _comment_added(self, link: Link, ticket_id: str, event: dict[str, Any]) -> Mapping[str, Any]:
        comment = event.get("comment")
        if not isinstance(comment, dict) or "id" not in comment:
            raise Malformed("event.comment with an id is missing")
        comment_id = numeric_id(comment["id"], "event.comment.id")
        body = comment.get("body")
        if body is None:
            body = ""
        if not isinstance(body, str):  # never str() an object into the customer's conversation
            raise Malformed("event.comment.body must be a string")
        author: dict[str, Any] = comment["author"] if isinstance(comment.get("author"), dict) else {}
        if not comment.get("is_public"):
            return {"acted": False, "ignored": "an internal note"}
        if not author.get("is_staff") or str(author.get("id")) == link.requester_id:
            return {"acted": False, "ignored": "the customer's own message"}
        if await self.state.is_ours(ticket_id, comment_id, body):
            return {"acted": False, "ignored": "posted by Relaydesk"}
        if not body.strip():
            return {"acted": False, "ignored": "an empty comment"}
        if await self.state.relayed(comment_id, ticket=ticket_id) == NOT_SENT:
            return {"acted": False, "ignored": "not written by the agent holding the conversation"}
        author_id = author.get("id")
        outcome = await self.reply(
            link.conversation_id,
            body,
            key=f"comment:{comment_id}",
            author=str(author_id) if isinstance(author_id, int | str) and not isinstance(author_id, bool) else "",
        )
        if outcome == "not_holder":  # told on the ticket, to the agents only; never sent later
            note = self.not_sent_note(comment_id)
            await self._comment(link, f"not-sent-{comment_id}", note, author="", public=False)
            await self.state.mark_relayed(comment_id, NOT_SENT, ticket=ticket_id)
            return {"acted": False, "ignored": "not written by the agent holding the conversation"}
        if outcome in ("done", "already"):
            await self.state.mark_relayed(comment_id, link.conversation_id, ticket=ticket_id)
        return {"acted": outcome == "done", "outcome": outcome}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Zendesk's webhook signature: base64 of HMAC-SHA256(secret, timestamp + body)."""
    return hmac_sha256_base64(secret, timestamp.encode() + body)


def _comment_id(answer: Any) -> str:
    """The id of the comment a ticket create or update made (its audit's Comment event)."""
    audit = (answer or {}).get("audit") or {}
    for event in audit.get("events") or []:
        if event.get("type") == "Comment" and event.get("id") is not None:
            return str(event["id"])
    return ""


def _tag(value: str) -> str:
    """Zendesk tags are single words: lower case, spaces and odd characters as underscores."""
    return re.sub(r"[^a-z0-9_:/.-]+", "_", value.lower()).strip("_")
