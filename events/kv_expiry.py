"""KV entries and removal markers that go by themselves (JetStream per-message TTL).

A key of a ``history=1`` bucket without a TTL keeps its last message for ever: a value nobody
removes, and after a delete or a purge the marker left in its place. Keys named after a
conversation, a reply or a Slack message (``rd_state``'s ``email.sent.*`` and
``delivery.slack.*``) so left one message per reply or per notice for as long as the
deployment ran (the long-run audit, 2026-12-07: a million Slack notices, two million markers).
Written with a TTL, the server removes the message when it lapses, and the key is gone.

Buckets created by nats-py 2.16 (``relaydesk setup``, every service) allow per-message TTLs;
one created elsewhere without ``allow_msg_ttl`` refuses them (10166): the entry or marker is
then written without one, as before, said once per bucket and process and counted
(``relaydesk_skipped_total{where="kv.no_message_ttl"}``). Only for keys whose marker nobody
relies on: a create-only key (``rd_parked``, ``rd_identity``) relies on its marker to stay
taken, and keeps it.
"""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from events.skips import count_skip

log = structlog.get_logger(__name__)

TTL_DISABLED = 10166  # "per-message TTL is disabled" (the stream has no allow_msg_ttl)
NO_TTL = "kv.no_message_ttl"
_said: set[str] = set()


def _refused(err: APIError, bucket: str) -> bool:
    """Whether ``err`` is the bucket refusing a TTL (then said once and counted)."""
    if err.err_code != TTL_DISABLED:
        return False
    count_skip(NO_TTL)
    if bucket not in _said:
        _said.add(bucket)
        log.warning(
            "kv.no_message_ttl",
            bucket=bucket,
            kept="entries and markers written without a TTL: they stay until removed by hand",
            fix=f"nats stream edit KV_{bucket} --allow-msg-ttl",
        )
    return True


async def put_expiring(js: JetStreamContext, bucket: str, key: str, value: bytes, ttl: float) -> int:
    """``kv.put`` of ``key`` that the server removes ``ttl`` seconds after (its revision)."""
    subject = f"$KV.{bucket}.{key}"
    try:
        return (await js.publish(subject, value, msg_ttl=ttl)).seq
    except APIError as err:
        if not _refused(err, bucket):
            raise
    return (await js.publish(subject, value)).seq


async def purge_expiring(kv: KeyValue, bucket: str, key: str, ttl: float) -> None:
    """Remove ``key`` of ``bucket`` (``kv`` is that bucket; a purge: its history goes) with a
    marker the server removes ``ttl`` seconds after, so that nothing of the key is left."""
    try:
        await kv.purge(key, msg_ttl=ttl)
    except APIError as err:
        if not _refused(err, bucket):
            raise
        await kv.purge(key)
