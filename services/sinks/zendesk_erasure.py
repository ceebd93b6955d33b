"""An erased customer's Zendesk copies: the tickets the sink created, then the end user.

Zendesk's GDPR guide ("Forgetting a user in Zendesk") has personal data in ticket
conversations deleted, then the user permanently deleted; permanently deleting the user alone
keeps their closed tickets (shown under "Permanently deleted user"), with the comments and the
subject (ours names the customer), and Zendesk refuses to delete an end user who requests a
ticket that is not closed. Redacting comments would leave the subject, the tags and the
requester's tickets in place; so each ticket is deleted (``DELETE /api/v2/tickets/{id}``, a soft
delete) and at once permanently (``DELETE /api/v2/deleted_tickets/{id}``, not restorable),
then the end user likewise (``DELETE /api/v2/users/{id}``, ``DELETE /api/v2/deleted_users/{id}``).

A ticket is Relaydesk's when the sink links it to one of the customer's conversations, or when
it is tagged ``relaydesk`` with an ``external_id`` (the conversation id) among the requester's
tickets (``GET /api/v2/users/{id}/tickets/requested``): a link lapses 30 days after the
conversation is resolved, the requester (``user.<customer>``) is kept. The user is kept when it
is not an end user (``create_or_update`` matched someone by email) or still requests tickets
Relaydesk did not create.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .sdk.erasure import Removed, delete, forget_links, linked_tickets
from .sdk.errors import Rejected

if TYPE_CHECKING:
    from .zendesk import ZendeskSink

TICKETS_RIGHT = (
    "the Zendesk user the sink's token acts as must be allowed to delete tickets (an admin, or an agent "
    "whose role has 'Can delete tickets')"
)
USERS_RIGHT = (
    "the Zendesk user the sink's token acts as must be allowed to delete end users (an admin, or an agent "
    "in a custom role that may manage end users and sees all tickets)"
)
PER_PAGE = 100
MAX_PAGES = 50


async def erase_customer(sink: ZendeskSink, customer_id: str) -> Removed:
    removed = Removed()
    user, ours = await linked_tickets(sink, customer_id)  # ours: ticket id → conversation id
    if user:
        for ticket in await _requested(sink, user):
            if _relaydesks(ticket):
                ours.setdefault(str(ticket["id"]), str(ticket.get("external_id") or ""))
    for ticket_id, conversation_id in ours.items():
        now = await delete(sink.api, f"/api/v2/tickets/{ticket_id}.json", right=TICKETS_RIGHT)
        # Also after a 404: an earlier try may have stopped between the two.
        purged = await delete(sink.api, f"/api/v2/deleted_tickets/{ticket_id}.json", right=TICKETS_RIGHT)
        removed.tickets += int(now or purged)
        await forget_links(sink, ticket_id, conversation_id)
    if user:
        await _erase_user(sink, user, removed)
        if removed.user != "kept":
            await sink.state.delete(f"user.{customer_id}")
    return removed


async def _erase_user(sink: ZendeskSink, user: str, removed: Removed) -> None:
    try:
        answer = await sink.api.call("GET", f"/api/v2/users/{user}.json")
    except Rejected as err:
        if err.http_status != 404:
            raise
        answer = None  # gone, or soft-deleted by an earlier try that stopped before the last step
    found: Mapping[str, Any] = (answer or {}).get("user") or {}
    if found and found.get("role", "end-user") != "end-user":
        removed.user, removed.kept_because = "kept", f"the Zendesk user is an {found.get('role')}, not an end user"
        return
    if found and found.get("active", True):
        others = [t for t in await _requested(sink, user) if not _relaydesks(t)]
        if others:
            removed.user = "kept"
            removed.kept_because = f"the Zendesk user requests {len(others)} ticket(s) Relaydesk did not create"
            return
        await delete(sink.api, f"/api/v2/users/{user}.json", right=USERS_RIGHT)
    if await delete(sink.api, f"/api/v2/deleted_users/{user}.json", right=USERS_RIGHT) or found:
        removed.user = "deleted"


async def _requested(sink: ZendeskSink, user: str) -> list[Mapping[str, Any]]:
    """The tickets the user requests, page by page (a user gone already requests none)."""
    out: list[Mapping[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        params = {"per_page": str(PER_PAGE), "page": str(page)}
        try:
            answer = await sink.api.call("GET", f"/api/v2/users/{user}/tickets/requested.json", params=params)
        except Rejected as err:
            if err.http_status == 404:
                return out
            raise
        out.extend(t for t in (answer or {}).get("tickets") or [] if isinstance(t, Mapping))
        if not (answer or {}).get("next_page"):
            break
    return out


def _relaydesks(ticket: Mapping[str, Any]) -> bool:
    """Created by a Relaydesk sink: tagged ``relaydesk``, the conversation id as external_id."""
    return "relaydesk" in (ticket.get("tags") or []) and bool(ticket.get("external_id"))
