"""The Freshdesk sink: the same two-way sync as Zendesk's, through the Freshdesk API v2.

Relaydesk → Freshdesk: an assignment creates the ticket (``POST /api/v2/tickets``; the
requester by ``unique_external_id`` = customer id, name, email or phone; ``responder_id`` =
the agent's Freshdesk agent id; tags ``relaydesk``, channel, tier, language, skills and
``rdconv_<conversation id>``, by which a ticket whose create got no answer is found again);
customer messages become incoming public notes by the requester, Relaydesk agents' replies
public notes by the agent (no Freshdesk email: the customer has them on their own channel);
a resolve sets status 4 (resolved); an erased customer's tickets and contact are deleted
(``freshdesk_erasure``; ``on_erasure = "keep"`` leaves them).

Freshdesk → Relaydesk: an automation rule ("Ticket is updated") triggers a webhook to the sink
with the ticket id and the shared secret in a header (Freshdesk webhooks are not signed).
The webhook is only a nudge: the sink reads the ticket's conversations and status from the
API itself, sends every public reply or note it has not sent yet (by conversation id) to the
customer if the agent holding the conversation wrote it (``agents``; another agent's gets a
private note saying it was not sent; a forward is never sent), and resolves the conversation
when the status is 4 (resolved) or 5 (closed). The conversations are read page by page (100
a page, up to ``MAX_PAGES``), not only the first 30.

A note is never posted twice blind: after a timeout or 5xx the event is tried again and a note
with the same text already on the ticket is adopted; its text is known as ours for ten minutes.
Nor is a ticket: Freshdesk has no idempotency key, and its search (``/api/v2/search``) lags by
minutes. A create is marked (``creating.<conversation id>``) before it is sent and sent once
(no blind retry); when the event is tried again after a timeout, a 5xx or a crash, the
requester's tickets updated since are listed (``GET /api/v2/tickets?unique_external_id=…&
updated_since=…``, read from the database) and the one tagged ``rdconv_<conversation id>`` is
taken instead of creating a second.
"""

from __future__ import annotations

import hmac
import html
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.sdk.signatures import first_match, secret_list
from events.model import (
    ConversationAssigned,
    ConversationResolved,
    CustomerErased,
    DeliveryFailed,
    MessageReceived,
    OfferAccepted,
    ReplyRequested,
)

from .freshdesk_erasure import erase_customer
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
from .sdk.errors import Malformed, Rejected
from .sdk.state import LINK_KEPT, NOT_SENT

TOKEN_HEADER = "X-Relaydesk-Webhook-Token"
OPEN, RESOLVED, CLOSED = 2, 4, 5
# A conversation entry's ``source`` that is written to the requester: 0 a reply, 2 a note (and
# none given). Not 8, a forwarded email: its text was for a third party (found by a security
# audit: a public forward to a vendor, "customer looks like a fraud, please check", went out
# to the customer), nor a logged call (9) or a social post (5, 7).
TO_THE_REQUESTER = (None, 0, 2)
PER_PAGE = 100  # Freshdesk's largest page of a ticket's conversations (the default is 30)
MAX_PAGES = 50  # 5,000 entries: a bound, not a limit any real ticket reaches
CLOCK_SKEW = 900.0  # s: ours against Freshdesk's, taken off a lookup's updated_since
LOOKUP_PAGES = 10  # the requester's tickets updated since a create: 1,000 is plenty


class FreshdeskSettings(SinkSettings, kw_only=True):
    # https://<domain>.freshdesk.com, or api_url to point elsewhere.
    domain: str = ""
    api_url: str = ""
    # Profile settings → Your API key.
    api_key: str = ""
    # The value the automation rule sends in the X-Relaydesk-Webhook-Token header.
    webhook_secret: str = ""
    # Also accepted, as a list or comma-separated: the old token while the rule's is changed.
    extra_webhook_secrets: list[str] | str = []
    # Relaydesk agent id → Freshdesk agent id (responder, author of her replies' notes).
    agents: dict[str, int] = {}
    tags: list[str] = []
    subject: str = "Relaydesk {channel} conversation with {customer}"


class FreshdeskSink(Sink):
    name: ClassVar[str] = "freshdesk"
    Settings: ClassVar[type[SinkSettings]] = FreshdeskSettings
    webhook_paths: ClassVar[tuple[str, ...]] = ("/freshdesk/webhook",)
    api_settings: ClassVar[tuple[str, ...]] = ("domain", "api_url", "api_key")
    handles = (*Sink.handles, CustomerErased)

    settings: FreshdeskSettings

    def problems(self) -> list[str]:
        s = self.settings
        out = []
        if not (s.domain or s.api_url):
            out.append("set domain (acme for acme.freshdesk.com) or api_url")
        if not s.api_key:
            out.append("set api_key")
        if not s.webhook_secret:
            out.append("set webhook_secret (sent by the automation rule in X-Relaydesk-Webhook-Token)")
        return out

    def make_api(self) -> ProviderApi:
        s = self.settings
        return self.basic_auth_api(s.api_url or f"https://{s.domain}.freshdesk.com", s.api_key, "X")

    # -- Relaydesk → Freshdesk -------------------------------------------------------------

    async def handle(self, item: SinkEvent) -> None:
        event = item.event
        if isinstance(event, CustomerErased):
            await on_customer_erased(self, event, lambda customer: erase_customer(self, customer))
            return
        if isinstance(event, ConversationAssigned | OfferAccepted):
            await self._assigned(event)
            return
        link = await self.state.link(getattr(event, "conversation_id", ""))
        if link is None:
            return  # not assigned yet: its messages go in when the ticket is created
        if isinstance(event, MessageReceived) and not event.metadata.get("auto"):
            await self._note(link, event.message_id, event.text or "(no text)", user=link.requester_id, incoming=True)
        elif isinstance(event, ReplyRequested):
            await self._note(link, event.reply_id, event.text, user=self._agent(event.agent_id), incoming=False)
        elif isinstance(event, DeliveryFailed):  # a private note: the agents see it, the customer does not
            text = not_delivered(event)
            await self._note(link, f"failed-{event.reply_id}", text, user="", incoming=False, private=True)
        elif isinstance(event, ConversationResolved):
            await self.api.call("PUT", f"/api/v2/tickets/{link.ticket_id}", json={"status": RESOLVED})

    def _agent(self, agent_id: str | None) -> str:
        found = self.settings.agents.get(agent_id or "")
        return str(found) if found else ""

    async def _assigned(self, event: ConversationAssigned | OfferAccepted) -> None:
        responder = self._agent(event.agent_id)
        link = await self.state.link(event.conversation_id)
        if link is not None:
            if responder:
                await self.api.call("PUT", f"/api/v2/tickets/{link.ticket_id}", json={"responder_id": int(responder)})
            return
        if await is_erased(self, event.customer_id):
            return  # a replay of the log: its tickets were deleted with the customer
        facts = await self.relaydesk.conversation(event.customer_id, event.conversation_id)
        if facts is None:
            return
        messages = [m for m in facts.messages if not m.metadata.get("auto")]
        found = await self._created_before(event.conversation_id, event.customer_id)
        if found is not None:
            ticket_id, requester = found
            if messages:
                await self.state.mark_synced(messages[0].message_id, "", ticket=ticket_id)  # the ticket's description
        else:
            ticket = self._new_ticket(facts, messages[0].text if messages else "", responder)
            # Sent once: after a timeout or a 5xx it may exist, and the next try looks for it.
            await self.state.put_expiring(f"creating.{event.conversation_id}", f"{time.time():.0f}", LINK_KEPT)
            answer = await self.api.call("POST", "/api/v2/tickets", json=ticket, retry=False)
            ticket_id, requester = str(answer["id"]), str(answer.get("requester_id") or "")
            if messages:
                await self.state.mark_synced(messages[0].message_id, "", ticket=ticket_id)
        if requester:  # the contact, found again by an erasure after the links lapsed
            await self.state.put(f"user.{event.customer_id}", requester)
        link = Link(
            conversation_id=event.conversation_id,
            customer_id=event.customer_id,
            ticket_id=ticket_id,
            requester_id=requester,
        )
        await self.state.save_link(link)
        for message in messages:
            await self._note(link, message.message_id, message.text or "(no text)", user=requester, incoming=True)

    def _new_ticket(self, facts: ConversationFacts, text: str, responder: str) -> dict[str, Any]:
        ticket: dict[str, Any] = {
            "subject": self.settings.subject.format(
                channel=facts.channel, customer=facts.customer_name or facts.customer_id
            ),
            "description": _html(text or "(no text)"),
            "name": facts.customer_name or facts.contact or facts.customer_id,
            "unique_external_id": facts.customer_id,
            "status": OPEN,
            "priority": {"gold": 3, "platinum": 4}.get(facts.tier, 2),
            "tags": self._tags(facts),
        }
        ticket.update(facts.contact_fields())
        if responder:
            ticket["responder_id"] = int(responder)
        return ticket

    async def _created_before(self, conversation_id: str, customer_id: str) -> tuple[str, str] | None:
        """The ticket (id, requester) an earlier try created for the conversation, when that
        try's answer never came: among the requester's tickets updated since it, the one tagged
        for the conversation. None when no try was made, or none was stored."""
        raw = await self.state.get(f"creating.{conversation_id}")
        if raw is None:
            return None
        try:
            since = float(raw) - CLOCK_SKEW
        except ValueError:
            since = time.time() - LINK_KEPT
        tag = _conversation_tag(conversation_id)
        params = {
            "unique_external_id": customer_id,
            "updated_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
            "order_by": "created_at",
            "order_type": "desc",
            "per_page": str(PER_PAGE),
        }
        for page in range(1, LOOKUP_PAGES + 1):
            try:
                chunk = await self.api.call("GET", "/api/v2/tickets", params={**params, "page": str(page)}) or []
            except Rejected as err:
                # No contact with that id: the try never reached Freshdesk, so no ticket either.
                if page == 1 and "(400)" in err.reason and "unique_external_id" in err.reason:
                    return None
                raise
            for ticket in chunk:
                if isinstance(ticket, Mapping) and tag in await self.ticket_tags(ticket):
                    return str(ticket["id"]), str(ticket.get("requester_id") or "")
            if len(chunk) < PER_PAGE:
                break
        return None

    async def ticket_tags(self, ticket: Mapping[str, Any]) -> list[str]:
        tags = ticket.get("tags")
        if tags is None:  # not in this listing: the ticket's own view has them
            tags = (await self.api.call("GET", f"/api/v2/tickets/{ticket['id']}") or {}).get("tags")
        return [str(tag).lower() for tag in tags or []]

    def _tags(self, facts: ConversationFacts) -> list[str]:
        tags = ["relaydesk", f"channel_{facts.channel}", f"tier_{facts.tier}", _conversation_tag(facts.conversation_id)]
        if facts.language:
            tags.append(f"language_{facts.language}")
        tags += [f"skill_{skill}" for skill in sorted(facts.skills)]
        return tags + list(self.settings.tags)

    async def _note(
        self, link: Link, item_id: str, text: str, *, user: str, incoming: bool, private: bool = False
    ) -> None:
        if await self.state.synced(item_id, ticket=link.ticket_id):
            return
        note: dict[str, Any] = {"body": _html(text), "private": private, "incoming": incoming}
        if user:
            note["user_id"] = int(user)
        if await self.state.posting(link.ticket_id, text):
            # An earlier attempt's answer never came: Freshdesk may have stored the note.
            found = await self._stored_note(link.ticket_id, text, user)
            if found:
                await self.state.posted(link.ticket_id, text, found)
                await self.state.mark_synced(item_id, found, ticket=link.ticket_id)
                return
        answer = await self.api.call("POST", f"/api/v2/tickets/{link.ticket_id}/notes", json=note, retry=False)
        note_id = str((answer or {}).get("id") or "")
        await self.state.posted(link.ticket_id, text, note_id)
        await self.state.mark_synced(item_id, note_id, ticket=link.ticket_id)

    async def _stored_note(self, ticket_id: str, text: str, user: str) -> str:
        """The id of a note on the ticket with this text (and author) no post of ours claimed, or ""."""
        for entry in await self._conversations(ticket_id):
            entry_id = str(entry.get("id") or "")
            if str(entry.get("body_text") or "").strip() != text.strip():
                continue
            if user and str(entry.get("user_id") or "") != user:
                continue
            if await self.state.adoptable(entry_id, ticket=ticket_id):
                return entry_id
        return ""

    async def _conversations(self, ticket_id: str) -> list[Mapping[str, Any]]:
        """Every conversation entry of the ticket: Freshdesk pages them (``per_page`` up to 100),
        so pages are read until one comes back short (at most ``MAX_PAGES``)."""
        out: list[Mapping[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            params = {"per_page": str(PER_PAGE), "page": str(page)}
            chunk = await self.api.call("GET", f"/api/v2/tickets/{ticket_id}/conversations", params=params) or []
            out.extend(entry for entry in chunk if isinstance(entry, Mapping))
            if len(chunk) < PER_PAGE:
                break
        return out

    # -- Freshdesk → Relaydesk -----------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        token = request.headers.get(TOKEN_HEADER, "")
        if not token:
            raise Unauthentic(f"missing {TOKEN_HEADER}")
        keys = [self.settings.webhook_secret, *secret_list(self.settings.extra_webhook_secrets)]
        if first_match(keys, lambda key: hmac.compare_digest(token.encode(), key.encode())) is None:
            raise Unauthentic(f"wrong {TOKEN_HEADER}: another secret? rotated? list the other in extra_webhook_secrets")

    async def webhook(self, request: WebhookRequest) -> Mapping[str, Any]:
        payload = request.json()
        ticket = payload.get("ticket_id") if isinstance(payload, dict) else None
        if isinstance(ticket, dict):  # {"ticket_id": ...} or Freshdesk's {"freshdesk_webhook": {...}}
            ticket = ticket.get("id")
        if ticket is None and isinstance(payload, dict) and isinstance(payload.get("freshdesk_webhook"), dict):
            ticket = payload["freshdesk_webhook"].get("ticket_id")
        if ticket in (None, ""):
            raise Malformed("ticket_id (a number) is missing")
        ticket_id = numeric_id(ticket, "ticket_id")
        link = await self.state.conversation_of(ticket_id)
        if link is None:
            return {"acted": False, "ignored": "not a Relaydesk ticket"}
        sent = 0
        for entry in await self._conversations(ticket_id):
            if await self._relay(link, ticket_id, entry):
                sent += 1
        status = (await self.api.call("GET", f"/api/v2/tickets/{ticket_id}") or {}).get("status")
        resolved = ""
        if status in (RESOLVED, CLOSED):
            resolved = await self.resolve(link.conversation_id, key=f"ticket:{ticket_id}:done")
        return {"acted": bool(sent) or resolved == "done", "replies_sent": sent, "resolved": resolved}

    async def _relay(self, link: Link, ticket_id: str, entry: Mapping[str, Any]) -> bool:
        """Send one of the ticket's conversation entries to the customer if it is a public
        agent reply nobody sent yet."""
        entry_id = str(entry.get("id") or "")
        text = str(entry.get("body_text") or "").strip()
        if not entry_id or not text or entry.get("incoming") or entry.get("private"):
            return False
        if entry.get("source") not in TO_THE_REQUESTER:
            return False  # a forward (to a third party: a vendor, a colleague), a logged call…
        author = str(entry.get("user_id") or "")
        if author == link.requester_id:
            return False
        if await self.state.relayed(entry_id, ticket=ticket_id) or await self.state.is_ours(ticket_id, entry_id, text):
            return False
        outcome = await self.reply(link.conversation_id, text, key=f"conversation:{entry_id}", author=author)
        if outcome == "not_holder":  # told on the ticket, to the agents only; never sent later
            note = self.not_sent_note(entry_id)
            await self._note(link, f"not-sent-{entry_id}", note, user="", incoming=False, private=True)
            await self.state.mark_relayed(entry_id, NOT_SENT, ticket=ticket_id)
            return False
        if outcome in ("done", "already"):
            await self.state.mark_relayed(entry_id, link.conversation_id, ticket=ticket_id)
        return outcome == "done"


def _conversation_tag(conversation_id: str) -> str:
    return f"rdconv_{conversation_id}".lower()


def _html(text: str) -> str:
    """Freshdesk bodies are HTML: the text escaped, line breaks kept."""
    return html.escape(text).replace("\n", "<br>")
