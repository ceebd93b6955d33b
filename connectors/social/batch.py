"""One Meta webhook POST as parsed: the batch the parsers fill (``ParsedBatch``), what every
message from Meta carries (``CHANNEL``, ``PROVIDER``, the text of a message Meta cannot show),
and Meta's JSON read leniently: a value of the wrong type reads as empty, so one odd item is
skipped and counted rather than failing the batch (see ``payload``).

Pure: no I/O; the clock is passed in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from events.model import Channel, InboundMessage

# What an agent reads for a message the provider could not show us (``metadata.unsupported``).
UNSUPPORTED_TEXT = "(The customer sent a message this channel cannot show.)"
CHANNEL: Channel = "social"
PROVIDER = "meta"

# A provider timestamp further than this in the future is not trusted (clock skew).
_FUTURE_SLACK = timedelta(minutes=5)


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


def meta_time(value: Any, now: datetime, *, millis: bool) -> datetime:
    """A provider timestamp (epoch ms for Messenger/IG, epoch s — often a string — for
    WhatsApp and feed changes) as an aware datetime; ``now`` when absent, bad or in the future."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past 1e308 (found by an audit: a 500)
        return now
    if millis:
        number /= 1000.0
    try:
        at = datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return now
    return now if at > now + _FUTURE_SLACK else at
