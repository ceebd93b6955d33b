"""What one event does to the rows: the change to its conversation's summary, the change to
its customer's summary, and the ``Folded`` bundle ``fold`` returns (entry, changes, link)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from services.timelines.rows import CustomerLink, TimelineEntry


class _Keep:
    """Marker: leave this summary field as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


class SummaryChange(msgspec.Struct, frozen=True, kw_only=True):
    """What one event does to its conversation's summary; fields left at KEEP do not change."""

    conversation_id: str
    customer_id: str
    seq: int
    at: datetime
    channel: Any = KEEP
    status: Any = KEEP
    agent_id: Any = KEEP
    last_reason: Any = KEEP
    opened: bool = False
    resolved: bool = False
    activity: bool = True
    messages: int = 0
    transfers: int = 0
    priority: Any = KEEP
    sla_due: Any = KEEP
    assigned: bool = False
    responded: bool = False
    declined: int = 0
    expired: int = 0


class CustomerChange(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    seq: int
    at: datetime
    identity: str | None = None  # an identity to add
    unlinked: str | None = None  # an identity to take away (IdentityUnlinked)
    profile: dict[str, Any] | None = None  # tier, flags, preferred_language, crm_id: set all
    created: bool = False
    conversations: int = 0
    activity: bool = False


class Folded(msgspec.Struct, frozen=True, kw_only=True):
    entry: TimelineEntry | None = None
    change: SummaryChange | None = None
    customer: CustomerChange | None = None
    link: CustomerLink | None = None
    erased: tuple[str, ...] = ()  # customers whose personal data the store redacts (CustomerErased)


NOTHING = Folded()
