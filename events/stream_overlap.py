"""Which streams already take the subjects a new stream wants.

NATS refuses a stream whose subjects overlap another stream's of the same account (error
10065, "subjects overlap with an existing stream") without naming the other stream. On a
shared NATS that other stream is usually a neighbour's (an application capturing ``rd.>`` or
``>``), and the operator needs its name and subjects to decide what to move: the refusal is
completed with them (``events.stream_setup``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StreamConfig

from events.skips import count_skip

log = structlog.get_logger(__name__)

OVERLAP_ERROR = 10065


def subjects_of(name: str, c: StreamConfig | KeyValueConfig | ObjectStoreConfig) -> list[str]:
    """The subjects the store's stream takes (a bucket's are nats-py's naming of them)."""
    if isinstance(c, StreamConfig):
        return list(c.subjects or ())
    if isinstance(c, KeyValueConfig):
        return [f"$KV.{c.bucket}.>"]
    bucket = c.bucket or name.removeprefix("OBJ_")
    return [f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"]


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some subject matches both patterns (``*``: one token, ``>``: one or more)."""
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right, strict=False):
        if x == ">" or y == ">":
            return True  # the other has a token here, and ">" takes it and whatever follows
        if x != y and x != "*" and y != "*":
            return False
    # No ">" met: a subject matching both has as many tokens as each.
    return len(left) == len(right)


def overlapping(wanted: Sequence[str], streams: Iterable[tuple[str, Sequence[str]]]) -> list[tuple[str, list[str]]]:
    """Each of ``streams`` (name, subjects) with the subjects of it that overlap ``wanted``."""
    found = []
    for name, theirs in streams:
        hits = [s for s in theirs if any(subjects_overlap(s, w) for w in wanted)]
        if hits:
            found.append((name, hits))
    return found


async def who_overlaps(js: JetStreamContext, stream: str, wanted: Sequence[str]) -> str:
    """What to add to NATS's refusal: the streams that hold ``wanted``'s subjects, or "" when
    they cannot be listed (the refusal is then said as NATS gave it)."""
    try:
        infos = await js.streams_info()
    except Exception as err:  # only the message is at stake: the refusal is raised anyway
        log.warning("streams.overlap_not_named", stream=stream, error=type(err).__name__)
        count_skip("streams.name_overlap")
        return f" (the streams could not be listed to name it: {type(err).__name__})"
    found = overlapping(
        wanted, ((i.config.name or "", list(i.config.subjects or ())) for i in infos if i.config.name != stream)
    )
    if not found:
        return ""
    named = "; ".join(f"{name} takes {', '.join(hits)}" for name, hits in found)
    return (
        f" ({named}): {stream} needs {', '.join(wanted)}; move or delete that stream,"
        " or give Relaydesk a NATS account of its own"
    )
