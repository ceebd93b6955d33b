"""Encoding row values as text (SQLite stores JSON and ISO-8601 UTC timestamps as TEXT)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from services.timelines.rows import utc

_json = msgspec.json.Encoder(order="sorted")
_encode = _json.encode


def dump_json(value: dict[str, Any] | list[Any] | None) -> str | None:
    return None if value is None else _encode(value).decode()


def load_json(value: str | bytes | dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    out = msgspec.json.decode(value)
    assert isinstance(out, dict)
    return out


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo is UTC else utc(value)).isoformat()


def parse_iso(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return utc(value)
    return utc(datetime.fromisoformat(value))
