"""The per-event fold: ONE stored event to the rows it writes (``Folded``): at most one
timeline entry, one change to its conversation's summary, one change to its customer's
summary and one merge link. Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import datetime

from events.model import (
    CHANNELS,
    CustomerCreated,
    CustomerErased,
    CustomerEvent,
    CustomerProfileUpdated,
    CustomersMerged,
    IdentityLinked,
    IdentityUnlinked,
)
from events.stored import StoredEvent
from services.timelines.changes import NOTHING, CustomerChange, Folded
from services.timelines.fold_conversation import CONVERSATION_FOLDS, Fold, compact, entry_of
from services.timelines.fold_conversation import reason_dict as reason_dict  # (fold.py imports it from here)
from services.timelines.fold_messages import MESSAGE_FOLDS
from services.timelines.rows import CustomerLink, utc


def fold(stored: StoredEvent) -> Folded:
    """The rows one stored event writes: a timeline entry, a change to its conversation's
    summary, a change to its customer's summary. Events that are not customer/conversation
    facts (agent events, UnknownEvent from a newer writer) write nothing."""
    ev = stored.event
    if not isinstance(ev, CustomerEvent):  # agent events, UnknownEvent
        return NOTHING
    # One dict lookup instead of a match over twenty classes (a rebuild folds every event of
    # the log); a class of no entry (a subclass, say) is found by isinstance as ``match`` would.
    one = _FOLDS.get(type(ev)) or _fold_of(ev)
    return NOTHING if one is None else one(ev, stored.seq, utc(ev.at))


def _fold_of(ev: CustomerEvent) -> Fold | None:
    for cls, one in _FOLDS.items():
        if isinstance(ev, cls):
            return one
    return None


# -- customer events ----------------------------------------------------------------------


def _customer_erased(ev: CustomerErased, seq: int, at: datetime) -> Folded:
    # The customer and everyone merged into it: their rows are redacted where they stand
    # (``redact``), here and in every rebuild.
    erased = tuple(dict.fromkeys([ev.customer_id, *ev.merged_ids]))
    detail = compact({"actor": ev.actor, "merged_ids": sorted(ev.merged_ids)})
    return Folded(entry=entry_of(ev, seq, at, "customer_erased", detail=detail), erased=erased)


def _customers_merged(ev: CustomersMerged, seq: int, at: datetime) -> Folded:
    # customer_id is the survivor; a merge into itself is refused upstream, and skipped here.
    if not ev.merged_id or ev.merged_id == ev.customer_id:
        return NOTHING
    return Folded(
        entry=entry_of(ev, seq, at, "customers_merged", detail=compact({"merged_id": ev.merged_id, "actor": ev.actor})),
        link=CustomerLink(merged_id=ev.merged_id, survivor_id=ev.customer_id, seq=seq),
    )


def _identity_linked(ev: IdentityLinked, seq: int, at: datetime) -> Folded:
    return Folded(
        entry=entry_of(ev, seq, at, "identity_linked", detail=compact({"identity": ev.identity, "actor": ev.actor})),
        customer=CustomerChange(customer_id=ev.customer_id, seq=seq, at=at, identity=ev.identity),
    )


def _identity_unlinked(ev: IdentityUnlinked, seq: int, at: datetime) -> Folded:
    detail = compact({"identity": ev.identity, "actor": ev.actor, "reason": ev.reason})
    return Folded(
        entry=entry_of(ev, seq, at, "identity_unlinked", detail=detail),
        customer=CustomerChange(customer_id=ev.customer_id, seq=seq, at=at, unlinked=ev.identity),
    )


def _customer_created(ev: CustomerCreated, seq: int, at: datetime) -> Folded:
    kind_channel = ev.identity.partition(":")[0]
    return Folded(
        entry=entry_of(
            ev,
            seq,
            at,
            "customer_created",
            channel=kind_channel if kind_channel in CHANNELS else None,
            detail={"identity": ev.identity},
        ),
        customer=CustomerChange(
            customer_id=ev.customer_id, seq=seq, at=at, identity=ev.identity, created=True, activity=True
        ),
    )


def _profile_updated(ev: CustomerProfileUpdated, seq: int, at: datetime) -> Folded:
    detail = {
        "tier": ev.tier,
        "flags": list(ev.flags),
        "preferred_language": ev.preferred_language,
        "crm_id": ev.crm_id,
        "actor": ev.actor,
    }
    profile = {
        "tier": ev.tier,
        "flags": list(ev.flags),
        "preferred_language": ev.preferred_language,
        "crm_id": ev.crm_id,
    }
    return Folded(
        entry=entry_of(ev, seq, at, "profile_updated", detail=compact(detail)),
        customer=CustomerChange(customer_id=ev.customer_id, seq=seq, at=at, profile=profile),
    )


_FOLDS: dict[type, Fold] = {
    CustomerErased: _customer_erased,
    CustomersMerged: _customers_merged,
    IdentityLinked: _identity_linked,
    IdentityUnlinked: _identity_unlinked,
    CustomerCreated: _customer_created,
    CustomerProfileUpdated: _profile_updated,
    **CONVERSATION_FOLDS,
    **MESSAGE_FOLDS,
}
