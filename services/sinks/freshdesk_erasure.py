"""An erased customer's Freshdesk copies: the tickets the sink created, then the contact.

Freshdesk's GDPR path is the contact's hard delete (``DELETE /api/v2/contacts/{id}/hard_delete``,
``force=true`` for a contact not soft-deleted first): it removes the contact "along with their
tickets, calls, forum topics and comments, satisfaction ratings, todos, and notes", for good.
A ticket's own delete (``DELETE /api/v2/tickets/{id}``) moves it to the trash, where an agent
can restore it. So the sink deletes its tickets, then hard-deletes the contact, which purges
them, unless the contact has tickets Relaydesk did not create (the helpdesk's own: a customer
who also wrote to the helpdesk's email address): then the contact is kept, its count logged,
and Relaydesk's tickets stay in the trash.

A ticket is Relaydesk's when the sink links it to one of the customer's conversations, or when
it is tagged ``relaydesk`` (or ``rdconv_<conversation>``) among the contact's tickets, listed
by ``unique_external_id`` = customer id (a link lapses 30 days after the conversation is
resolved; ``updated_since`` far back, since without it the list shows the last 30 days only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .sdk.erasure import Removed, delete, forget_links, linked_tickets
from .sdk.errors import Rejected

if TYPE_CHECKING:
    from .freshdesk import FreshdeskSink

TICKETS_RIGHT = (
    "the agent whose API key the sink uses needs the 'Delete tickets' privilege (Admin → Agent roles), "
    "or the account admin's key"
)
CONTACTS_RIGHT = (
    "the agent whose API key the sink uses must be allowed to delete contacts for good (an account admin, "
    "or a role with 'Delete contacts')"
)
SINCE_EVER = "2000-01-01T00:00:00Z"
PER_PAGE = 100
MAX_PAGES = 50


async def erase_customer(sink: FreshdeskSink, customer_id: str) -> Removed:
    removed = Removed()
    contact, ours = await linked_tickets(sink, customer_id)  # ours: ticket id → conversation id
    listed = await _tickets(sink, {"unique_external_id": customer_id})
    for ticket in listed:
        contact = contact or str(ticket.get("requester_id") or "")
        if await _relaydesks(sink, ticket):
            ours.setdefault(str(ticket["id"]), "")
    if contact and await sink.state.get(f"user.{customer_id}") is None:
        # Kept before its tickets go: a retry (a refused hard delete, parked) lists none of them.
        await sink.state.put(f"user.{customer_id}", contact)
    for ticket_id, conversation_id in ours.items():
        removed.tickets += int(await delete(sink.api, f"/api/v2/tickets/{ticket_id}", right=TICKETS_RIGHT))
        await forget_links(sink, ticket_id, conversation_id)
    if contact:
        others = [t for t in await _tickets(sink, {"requester_id": contact}) if str(t.get("id")) not in ours]
        if others:
            removed.user = "kept"
            removed.kept_because = f"the Freshdesk contact has {len(others)} ticket(s) Relaydesk did not create"
            return removed
        path = f"/api/v2/contacts/{contact}/hard_delete"
        if await delete(sink.api, path, right=CONTACTS_RIGHT, params={"force": "true"}):
            removed.user = "deleted"
        await sink.state.delete(f"user.{customer_id}")
    return removed


async def _tickets(sink: FreshdeskSink, query: dict[str, str]) -> list[Mapping[str, Any]]:
    """The tickets (not deleted) the filter lists, every page; none for a contact gone already
    (Freshdesk answers 400 for an unknown ``unique_external_id``)."""
    out: list[Mapping[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        params = {**query, "updated_since": SINCE_EVER, "per_page": str(PER_PAGE), "page": str(page)}
        try:
            chunk = await sink.api.call("GET", "/api/v2/tickets", params=params) or []
        except Rejected as err:
            if err.http_status in (400, 404) and page == 1:
                return out
            raise
        out.extend(t for t in chunk if isinstance(t, Mapping))
        if len(chunk) < PER_PAGE:
            break
    return out


async def _relaydesks(sink: FreshdeskSink, ticket: Mapping[str, Any]) -> bool:
    tags = await sink.ticket_tags(ticket)
    return "relaydesk" in tags or any(tag.startswith("rdconv_") for tag in tags)
