"""The rows the timeline projection writes and the API serves: timeline entries,
conversation summaries, customer summaries, merge links and the erasure register. Plain data, stored as UTC."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

Direction = Literal["in", "out", "none"]
Status = Literal["waiting", "offered", "assigned", "resolved"]
STATUSES: tuple[str, ...] = ("waiting", "offered", "assigned", "resolved")


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a customer's timeline; ``seq`` (the stream sequence) is its natural key."""

    customer_id: str
    seq: int
    conversation_id: str | None
    at: datetime
    kind: str
    channel: str | None = None
    direction: Direction = "none"
    agent_id: str | None = None
    message_id: str | None = None
    text: str | None = None
    reason: dict[str, Any] | None = None  # the routing DecisionReason, where the event has one
    detail: dict[str, Any] | None = None  # kind-specific extras (transfer target, step, failure reason...)


class ConversationSummary(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: str
    customer_id: str
    channel: str | None
    status: str
    agent_id: str | None
    opened_at: datetime | None
    last_activity_at: datetime
    resolved_at: datetime | None = None
    transfer_count: int = 0
    message_count: int = 0
    last_reason: dict[str, Any] | None = None
    last_seq: int = 0
    # for service metrics (time to assign, first response, SLA attainment, decline rates):
    priority: int = 0
    sla_due: datetime | None = None
    first_assigned_at: datetime | None = None
    first_response_at: datetime | None = None
    offers_declined: int = 0
    offers_expired: int = 0
    # The digests of the conversation's events folded so far (``events.digests``, 8 bytes each):
    # a re-published event is recognised and folded into nothing. Not part of what the API shows.
    folded: bytes = b""


class CustomerSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One customer across every channel: identities, profile, activity."""

    customer_id: str
    identities: list[str] = []
    tier: str | None = None
    flags: list[str] = []
    preferred_language: str | None = None
    crm_id: str | None = None
    created_at: datetime | None = None
    last_activity_at: datetime | None = None
    conversation_count: int = 0
    last_seq: int = 0
    erased: bool = False  # CustomerErased: identities and CRM id read as "[erased]"
    # Computed when read, from the merge links (never stored in the customer's own row, so a
    # one-customer rebuild of either side keeps them right):
    merged_into: str | None = None  # the surviving customer, if this one was merged away
    merged: list[str] = []  # customers merged into this one, directly or through others

    def search_text(self) -> str:
        """What ``customers(q=...)`` matches against (``search_form``)."""
        return search_form(" ".join([self.customer_id, *self.identities, self.crm_id or ""]))


def search_form(text: str) -> str:
    """Case-folded in NFC, for the customer search and its query alike: ``josé`` typed in NFD
    (a Mac's) finds the customer stored in NFC, and the other way round. Unicode case folding,
    not lower case (found by an i18n audit): ``strasse`` finds ``Straße`` and ``STRASSE`` finds
    ``straße``; the dotted capital ``İ`` (Turkish, Azeri) folds to ``i`` + U+0307 COMBINING DOT
    ABOVE, and that dot is dropped after an ``i``, so ``istanbul`` and ``ISTANBUL`` find
    ``İstanbul``. The dotless i (U+0131) stays a letter of its own, as Turkish reads it.
    Rows written before this are folded again on their customer's next event or by
    ``relaydesk rebuild timelines``; until then ``ß`` in them is found only as typed."""
    return unicodedata.normalize("NFC", text).casefold().replace("i\u0307", "i")


class CustomerLink(msgspec.Struct, frozen=True, kw_only=True):
    """``merged_id`` was merged into ``survivor_id``: its history shows on the survivor's timeline."""

    merged_id: str
    survivor_id: str
    seq: int


class ErasureRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One ``CustomerErased`` the projector folded: the erasure register (table ``erasures``),
    which a rebuild carries over instead of refolding, so it outlives a restore of NATS from a
    backup taken before the erasure (``services.erasures_undone``). Ids, times and the
    operator's reason (clear on the log too): no personal data."""

    customer_id: str  # the survivor the erasure was written on
    seq: int  # the log sequence of its CustomerErased (on the log it was folded from)
    at: datetime
    reason: str = ""  # the request's reference, as the operator gave it
    merged_ids: list[str] = []  # the customers merged into it, erased with it


def utc(value: datetime) -> datetime:
    """Events carry aware datetimes; a naive one is taken as UTC. Stored as UTC."""
    tz = value.tzinfo
    if tz is UTC:  # what decoding gives: the common case, no new object (a rebuild calls this ~5x an event)
        return value
    return value.replace(tzinfo=UTC) if tz is None else value.astimezone(UTC)
