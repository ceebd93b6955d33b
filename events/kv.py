"""Listing a KV bucket's keys with one request.

nats-py's ``KeyValue.keys()`` watches the bucket with an ordered consumer and decides "no more
keys" from that consumer's pending count taken right after it subscribed; on a busy machine it
can answer an empty list for a bucket that holds keys (seen as ``relaydesk dlq list`` showing
nothing while records were parked). The stream's own per-subject state, asked for with a
subject filter, is one request and does not race. Deleted and purged keys still have a marker
message on their subject: callers skip them when the entry reads as gone.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError


async def bucket_keys(js: JetStreamContext, bucket: str, keys: str = ">") -> list[str]:
    """Every key of ``bucket`` matching ``keys`` (a subject filter), deleted ones included."""
    prefix = f"$KV.{bucket}."
    try:
        info = await js.stream_info(f"KV_{bucket}", subjects_filter=prefix + keys)
    except NotFoundError:
        return []
    return sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))
