"""One Meta webhook POST as parsed: the batch the parsers fill (``ParsedBatch``), what every
message from Meta carries (``CHANNEL``, ``PROVIDER``, the text of a message Meta cannot show),
and Meta's JSON read leniently: a value of the wrong type reads as empty, so one odd item is
skipped and counted rather than failing the batch (see ``payload``).

Pure: no I/O; the clock is passed in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from events.model import Channel, InboundMessage

# What an agent reads for a message the provider could not show us (``metadata.unsupported``).
UNSUPPORTED_TEXT = "(The customer sent a message this channel cannot show.)"
CHANNEL: Channel = "social"
PROVIDER = "meta"


@dataclass
class ParsedBatch:
    messages: list[InboundMessage] = field(default_factory=list)
    # Not published: echo, status, receipt, reaction, own_post, ignored_field, skipped, bad_id, batch_duplicate…
    counts: Counter[str] = field(default_factory=Counter)
    # WhatsApp delivery receipts: (wamid of our message, status), for logs.
    statuses: list[tuple[str, str]] = field(default_factory=list)


def as_obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def as_text(value: Any) -> str:
    """Message text as sent (not stripped)."""
    return value if isinstance(value, str) else ""


def provider_at(value: Any, *, millis: bool) -> str:
    """A provider timestamp (epoch ms for Messenger/IG, epoch s — often a string — for
    WhatsApp and feed changes) as ISO 8601 UTC, for ``metadata.provider_at``; "" when absent
    or no time at all. Metadata only: what Meta claims is never the message's ``at``, which
    is when the connector received it (a 1970 timestamp made a message expire under
    ``[retention] message_days`` at once and put a first response time at 56 years; an old
    one, Meta's or a forger's, still does neither)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past 1e308 (found by an audit: a 500)
        return ""
    if millis:
        number /= 1000.0
    try:
        return datetime.fromtimestamp(number, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return ""
