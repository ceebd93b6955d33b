"""Listing a KV bucket's keys with one request.

nats-py's ``KeyValue.keys()`` watches the bucket with an ordered consumer and decides "no more
keys" from that consumer's pending count taken right after it subscribed; on a busy machine it
can answer an empty list for a bucket that holds keys (seen as ``relaydesk dlq list`` showing
nothing while records were parked). The stream's own per-subject state, asked for with a
subject filter, is one request and does not race. Deleted and purged keys still have a marker
message on their subject: callers skip them when the entry reads as gone.
"""

from __future__ import annotations

import json

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

_STREAM_NOT_FOUND = 10059


async def stream_subjects(js: JetStreamContext, stream: str, subjects_filter: str) -> list[str]:
    """Every subject of ``stream`` matching ``subjects_filter`` that holds a message, sorted.
    The server answers at most 100,000 subjects a request (``limit``); the rest are asked for
    by ``offset``, which nats-py's ``stream_info`` does not do: a bucket of more keys than that
    was listed short. ``NotFoundError`` when there is no such stream."""
    found: list[str] = []
    while True:
        request = json.dumps({"subjects_filter": subjects_filter, "offset": len(found)}).encode()
        reply = await js._nc.request(f"{js._prefix}.STREAM.INFO.{stream}", request, timeout=js._timeout)
        answer = json.loads(reply.data)
        error = answer.get("error")
        if error:
            if error.get("err_code") == _STREAM_NOT_FOUND:
                raise NotFoundError(code=404, err_code=_STREAM_NOT_FOUND, description=error.get("description", ""))
            raise RuntimeError(f"STREAM.INFO {stream}: {error.get('description') or error}")
        page = list((answer.get("state") or {}).get("subjects") or {})
        found += page
        if not page or len(found) >= int(answer.get("total") or 0):
            return sorted(found)


async def bucket_keys(js: JetStreamContext, bucket: str, keys: str = ">") -> list[str]:
    """Every key of ``bucket`` matching ``keys`` (a subject filter), deleted ones included."""
    prefix = f"$KV.{bucket}."
    try:
        subjects = await stream_subjects(js, f"KV_{bucket}", prefix + keys)
    except NotFoundError:
        return []
    return [subject[len(prefix) :] for subject in subjects]
