"""Pages of a list endpoint: a bounded ``limit`` and an opaque ``cursor``.

Found by a scale audit: ``GET /v1/conversations`` and ``GET /v1/agents`` answered every open
conversation and every agent at once (80,000 conversations: tens of megabytes, every 3 s from
each supervisor page). A list now answers at most ``limit`` items (``DEFAULT_LIMIT`` unless
asked, at most ``MAX_LIMIT``: more is 400) and ``next_cursor``, to pass back as ``?cursor=`` for
the next page (``null``: the last page). The order is a key each item keeps for its life (an
open conversation's ``opened_at`` and id, an agent's id) and the cursor is the last key served,
so a page after a change neither repeats nor skips an item that was there all along: an item
that came meanwhile shows when its key is after the cursor, one that went is simply not there.
"""

from __future__ import annotations

import base64
import heapq
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from services.api.common import ApiError, query_int

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

T = TypeVar("T")
Key = tuple[Any, ...]

_keys = msgspec.json.Decoder(list[int | str])


def limit_of(request: web.Request, default: int = DEFAULT_LIMIT, high: int = MAX_LIMIT) -> int:
    """``?limit=`` (1 to ``high``, else 400 naming the range)."""
    return query_int(request, "limit", default, low=1, high=high)


def encode_cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(key))).decode().rstrip("=")


def cursor_of(request: web.Request, shape: tuple[type, ...]) -> Key | None:
    """``?cursor=`` as the key it was made from (``shape``: the types of its parts), or 400."""
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        key = _keys.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, msgspec.DecodeError):
        raise ApiError(400, "cursor is not one this endpoint gave (pass next_cursor back as it came)") from None
    if len(key) != len(shape) or not all(type(part) is kind for part, kind in zip(key, shape, strict=True)):
        raise ApiError(400, "cursor is not one this endpoint gave (pass next_cursor back as it came)")
    return tuple(key)


class Page(msgspec.Struct, frozen=True):
    items: list[Any]
    total: int  # items matching, on every page
    next_cursor: str | None


def page(items: Iterable[T], key: Callable[[T], Key], after: Key | None, limit: int) -> Page:
    """The first ``limit`` of ``items`` (already filtered) in ``key`` order after ``after``,
    their total and the cursor of the next page. One pass and a heap of ``limit + 1``: a page
    of 100 out of 100,000 sorts 101, not 100,000."""
    total = 0

    def counted() -> Iterable[T]:
        nonlocal total
        for item in items:
            total += 1
            if after is None or key(item) > after:
                yield item

    later = heapq.nsmallest(limit + 1, counted(), key=key)
    more = len(later) > limit
    shown = later[:limit]
    return Page(shown, total, encode_cursor(key(shown[-1])) if more else None)
