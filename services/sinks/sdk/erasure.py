"""A customer erased in Relaydesk (``CustomerErased``, GDPR Art. 17): what a helpdesk sink put
into the helpdesk for them goes too, as far as the helpdesk's API allows.

The sink gives ``on_customer_erased`` a ``remove(customer_id)`` that deletes, in the helpdesk,
the tickets it created for the customer's conversations (found by the links it still has and
by listing the requester it created, so a ticket whose link lapsed is found too; only tickets
marked as Relaydesk's are touched) and then the helpdesk user it created, unless that user has
tickets Relaydesk did not create (those are the helpdesk's own: the user is kept and the
count logged, for the DPO). Here:

- ``[sinks.<name>] on_erasure = "keep"``: nothing is removed (logged, counted ``kept``);
- each erased id (the customer and every id merged into it) is done once: ``erased.<id>`` in
  the sink's bucket (kept for good: only the pseudonymous id) makes a redelivered event, or a
  replay of the log, do nothing, and stops a replayed assignment from creating the ticket
  again;
- a delete answered 404 is done (a retry after a crash, or an agent deleted it first); 5xx,
  timeouts and 429 are retried as every call; a 403 parks the event with the right the API user
  lacks (``relaydesk sink NAME --retry-parked`` once it has it); a 401 waits as for every call;
- counted in ``relaydesk_sink_erasures_total{sink,outcome}`` (done, already, kept, parked) and
  ``relaydesk_sink_erased_total{sink,kind}`` (ticket, user); logged with the customer id only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter

from events.customer_conversations import conversation_ids
from events.model import CustomerErased

from .errors import Rejected

if TYPE_CHECKING:
    from .api import ProviderApi
    from .base import Sink

log = structlog.get_logger("relaydesk.sink")

SINK_ERASURES = Counter(
    "relaydesk_sink_erasures_total",
    "Erased customers a sink looked at, by outcome (done, already, kept, parked)",
    ["sink", "outcome"],
)
SINK_ERASED = Counter(
    "relaydesk_sink_erased_total",
    "Helpdesk objects a sink deleted for erased customers, by kind (ticket, user)",
    ["sink", "kind"],
)


@dataclass
class Removed:
    """What ``remove`` did for one customer (counts and ids, nothing personal)."""

    tickets: int = 0
    user: str = "none"  # deleted, none (never created, or gone), kept (see kept_because)
    kept_because: str = ""


def erased_key(customer_id: str) -> str:
    return f"erased.{customer_id}"


async def is_erased(sink: Sink, customer_id: str) -> bool:
    """The customer was erased and the sink removed their helpdesk copies: create nothing more."""
    return await sink.state.get(erased_key(customer_id)) is not None


async def on_customer_erased(sink: Sink, event: CustomerErased, remove: Callable[[str], Awaitable[Removed]]) -> None:
    """Run ``remove`` for the customer and every id merged into it, each once (see the module
    docstring). A ``Rejected`` (403: a right the API user lacks) parks the event."""
    bound = log.bind(sink=sink.name, customer_id=event.customer_id)
    if sink.settings.on_erasure == "keep":
        SINK_ERASURES.labels(sink=sink.name, outcome="kept").inc()
        bound.info("sink.erasure_kept", reason=f"[sinks.{sink.name}] on_erasure = keep: the helpdesk keeps its copies")
        return
    for customer in dict.fromkeys((event.customer_id, *event.merged_ids)):
        if await is_erased(sink, customer):
            SINK_ERASURES.labels(sink=sink.name, outcome="already").inc()
            continue
        try:
            removed = await remove(customer)
        except Rejected as err:
            SINK_ERASURES.labels(sink=sink.name, outcome="parked").inc()
            bound.error("sink.erasure_refused", erased_id=customer, reason=err.reason)
            raise
        SINK_ERASED.labels(sink=sink.name, kind="ticket").inc(removed.tickets)
        if removed.user == "deleted":
            SINK_ERASED.labels(sink=sink.name, kind="user").inc()
        await sink.state.put(erased_key(customer), "done")
        SINK_ERASURES.labels(sink=sink.name, outcome="done").inc()
        if removed.user == "kept":
            bound.warning(
                "sink.erasure_user_kept",
                erased_id=customer,
                tickets_deleted=removed.tickets,
                reason=removed.kept_because,
                action="the helpdesk user has data Relaydesk did not put there: erase it in the helpdesk",
            )
        else:
            bound.info("sink.customer_erased", erased_id=customer, tickets_deleted=removed.tickets, user=removed.user)


async def linked_tickets(sink: Sink, customer_id: str) -> tuple[str, dict[str, str]]:
    """The helpdesk user the sink made for the customer (its ``user.`` key, else a linked
    ticket's requester; "" if neither) and the tickets its links name (ticket id → conversation)."""
    raw = await sink.state.get(f"user.{customer_id}")
    user = raw.decode() if raw else ""
    ours: dict[str, str] = {}
    for conversation_id in await conversations_of(sink, customer_id):
        link = await sink.state.link(conversation_id)
        if link is not None:
            ours[link.ticket_id] = conversation_id
            user = user or link.requester_id
    return user, ours


async def conversations_of(sink: Sink, customer_id: str) -> list[str]:
    """The customer's conversation ids, from the log's subjects (they outlive the erasure): asked
    of the stream, nothing read or decrypted (``events.customer_conversations``)."""
    return await conversation_ids(sink.relaydesk.store.js, (customer_id,))


async def delete(api: ProviderApi, path: str, *, right: str, params: dict[str, str] | None = None) -> bool:
    """DELETE ``path``: True if it went now, False if it was gone already (404)."""
    try:
        await api.call("DELETE", path, params=params, forbidden=right)
    except Rejected as err:
        if err.http_status == 404:
            return False
        raise
    return True


async def forget_links(sink: Sink, ticket_id: str, conversation_id: str) -> None:
    """Drop the sink's link keys of a deleted ticket (a webhook about it is then not ours)."""
    await sink.state.delete(f"ticket.{ticket_id}")
    if conversation_id:
        await sink.state.delete(f"conv.{conversation_id}")
