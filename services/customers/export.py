"""Everything Relaydesk holds about a customer, as one JSON document: the answer to a subject
access request (GDPR Art. 15; Art. 20's portable copy), the counterpart of ``erase``.

It takes the customer's *family*, as an erasure does (the survivor and every customer merged
into it: one person), and gathers from the log alone, opened with the customers' keys:

- ``profile`` and ``identities``: the survivor's profile and every address of the family;
- ``events``: every event on the family's subjects, oldest first, with its stream sequence and
  subject: messages and replies with their text, routing facts (who was offered and assigned
  what, when), the team's internal notes (``NoteAdded``: personal data about the person too,
  said in ``notes``), deliveries, profile changes, links and merges;
- ``chat_history``: the web chat frames kept for each chat address of the family.

Files are listed with their names, types, sizes and digests (``attachments`` of each message and
reply), not copied: they are fetched by their links while those are valid. Nothing is written:
an export changes nothing, so asking again is always safe. Each one is logged
(``customers.exported``, with the customer ids and the actor; no personal data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import structlog
from nats.js import JetStreamContext

from connectors.chat.history import ChatHistory, HistoryUnavailable
from events.model import NoteAdded
from services.customers.erase import ErasureTargets
from services.customers.service import CustomerError, Customers, check_customer_id

log = structlog.get_logger(__name__)

EXPORT_FORMAT = 1


@dataclass
class CustomerExport:
    requested: str
    customer_id: str  # the survivor of the family
    customers: list[str]
    erased: bool
    profile: dict[str, Any]
    identities: list[str]
    events: list[dict[str, Any]]
    chat_history: list[dict[str, Any]]
    exported_at: datetime

    def to_json(self) -> dict[str, Any]:
        notes = sum(1 for e in self.events if e["type"] == "note_added")
        return {
            "format": EXPORT_FORMAT,
            "requested": self.requested,
            "customer_id": self.customer_id,
            "customers": self.customers,
            "erased": self.erased,
            "exported_at": self.exported_at.isoformat(),
            "profile": self.profile,
            "identities": self.identities,
            "events": self.events,
            "chat_history": self.chat_history,
            "notes": f"{notes} internal notes of the team are among the events (type note_added)",
        }


async def export_customer(
    customers: Customers,
    js: JetStreamContext,
    customer_id: str,
    actor: str,
    *,
    now: datetime,
    targets: ErasureTargets | None = None,
) -> CustomerExport:
    """The export of ``customer_id``'s family. Raises ``CustomerError``: 400 for a malformed id,
    404 for an unknown customer."""
    check_customer_id(customer_id)
    if not (await customers.facts(customer_id)).exists:
        raise CustomerError(404, f"no customer {customer_id}")
    survivor = await customers.survivor(customer_id)
    family = await customers.family(survivor)
    ids = [f.customer_id for f in family]
    identities = sorted({i for f in family for i in f.identities})
    events: list[dict[str, Any]] = []
    for member in ids:
        for stored in await customers.store.read_customer_direct(member):  # batched gets, no consumer
            fields = msgspec.to_builtins(stored.event)
            events.append({"seq": stored.seq, "subject": stored.subject, **fields})
    events.sort(key=lambda e: int(e["seq"]))
    export = CustomerExport(
        requested=customer_id,
        customer_id=survivor,
        customers=ids,
        erased=family[0].erased,
        profile=msgspec.to_builtins(family[0].profile),
        identities=identities,
        events=events,
        chat_history=await _chat_history(js, identities, targets or ErasureTargets()),
        exported_at=now,
    )
    log.info(
        "customers.exported",
        customer_id=survivor,
        requested=customer_id,
        family=len(ids),
        events=len(events),
        notes=sum(1 for e in events if e.get("type") == _tag(NoteAdded)),
        actor=actor,
    )
    return export


def _tag(kind: type[msgspec.Struct]) -> str:
    return str(kind.__struct_config__.tag)


async def _chat_history(js: JetStreamContext, identities: list[str], targets: ErasureTargets) -> list[dict[str, Any]]:
    history = ChatHistory(stream=targets.chat_stream, prefix=targets.chat_subject, js=js)
    out: list[dict[str, Any]] = []
    for identity in identities:
        kind, _, address = identity.partition(":")
        if kind != "chat" or not address:
            continue
        try:
            frames = await history.read(address, 0)
        except HistoryUnavailable as err:  # no chat connector ever ran, or NATS away: said in the export
            out.append({"address": address, "frames": [], "unavailable": str(err)})
            continue
        out.append({"address": address, "frames": [frame.to_json() for frame in frames]})
    return out
