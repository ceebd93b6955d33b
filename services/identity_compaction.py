"""Rewriting ``rd_identity`` so no removed entry's bytes stay on disk
(``relaydesk customers migrate-identities --compact``).

JetStream keeps a purged value's bytes in the stream's files until the block is dropped; only
deleting the stream frees them. The entries kept are first copied into a staging bucket
(``<bucket>_compact``) and the copy marked complete; then the bucket is deleted, created again
and filled from the copy, the refill checked against it, and the copy dropped.

Nothing lives only in this process: an operator's Ctrl-C, a crash or NATS going away between
the delete and the end of the refill lost every mapping before (customers were split in two
by their next message). Cut short anywhere, running the command again finishes the job: from
the original while the copy is not complete (the original is untouched until it is), from the
copy once it is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from events import subjects
from events.kv import bucket_keys
from services.identity import legacy_identity

if TYPE_CHECKING:
    from services.identity import IdentityDirectory

log = structlog.get_logger("relaydesk.identity")

INTAKE_DURABLE = "intake"  # services.intake.consumer.DURABLE (not imported: it brings the intake stack)
COPY_SUFFIX = "_compact"
COPY_COMPLETE = "_meta.copy_complete"  # in the copy only: what the refill must find
_AT_ONCE = 256


class CompactionFailed(RuntimeError):
    """The copy or the refill does not hold what it should; the copy is kept for a rerun."""


class _CopyMarker(msgspec.Struct, frozen=True):
    entries: int
    history: int
    replicas: int


@dataclass(frozen=True)
class _Copy:
    bucket: str
    kv: KeyValue
    marker: _CopyMarker


async def intake_reading(js: JetStreamContext, stream: str = subjects.INBOUND_STREAM) -> int:
    """Pull requests waiting on the ``intake`` consumer: a running intake always has one (it
    asks again each second), so above zero intake is running and would look identities up
    while the bucket is refilled. A stopped intake's requests expire within a second."""
    try:
        info = await js.consumer_info(stream, INTAKE_DURABLE)
    except NotFoundError:
        return 0  # no intake ever ran here
    return info.num_waiting or 0


async def compact(directory: IdentityDirectory) -> int:
    """Rewrite ``directory``'s bucket from a complete staging copy; returns the entries kept."""
    js = directory.js
    copy = await _complete_copy(js, directory.bucket, directory.kv)
    entries = {key: value for key, value in (await _entries(js, copy.bucket)).items() if key != COPY_COMPLETE}
    if len(entries) != copy.marker.entries:
        raise CompactionFailed(
            f"the copy in {copy.bucket} holds {len(entries)} entries, not the {copy.marker.entries} it was made with"
        )
    try:
        await js.delete_key_value(directory.bucket)
    except BucketNotFoundError:
        log.info("identity.compact_bucket_absent", bucket=directory.bucket, reason="deleted by a run cut short")
    directory.kv = await js.create_key_value(
        KeyValueConfig(bucket=directory.bucket, history=copy.marker.history, replicas=copy.marker.replicas)
    )
    await _put_all(directory.kv, entries)
    back = await _entries(js, directory.bucket)
    if back != entries:
        missing = len(set(entries) - set(back))
        raise CompactionFailed(
            f"{directory.bucket} holds {len(back)} entries after the refill ({missing} missing); "
            f"the copy stays in {copy.bucket}: run the command again"
        )
    await js.delete_key_value(copy.bucket)
    log.info("identity.compacted", entries=len(entries))
    return len(entries)


async def _complete_copy(js: JetStreamContext, bucket: str, kv: KeyValue) -> _Copy:
    """The staging copy, complete: an earlier run's if it completed one, else made now from the
    original (an incomplete copy is made again: the original is still whole then)."""
    name = f"{bucket}{COPY_SUFFIX}"
    try:
        found: KeyValue | None = await js.key_value(name)
    except BucketNotFoundError:
        found = None
    if found is not None:
        try:
            entry = await found.get(COPY_COMPLETE)
        except KeyNotFoundError:
            log.info("identity.compact_copy_restarted", copy=name, reason="an earlier copy was cut short")
            await js.delete_key_value(name)
        else:
            log.info("identity.compact_resumed", copy=name, reason="an earlier run completed the copy")
            return _Copy(name, found, msgspec.json.decode(entry.value or b"", type=_CopyMarker))
    info = await js.stream_info(f"KV_{bucket}")
    status = await kv.status()
    replicas = info.config.num_replicas or 1
    staging = await js.create_key_value(KeyValueConfig(bucket=name, history=1, replicas=replicas))
    # Legacy keys (addresses in clear) are not kept: ``migrate_all`` moved them first.
    entries = {key: value for key, value in (await _entries(js, bucket)).items() if legacy_identity(key) is None}
    await _put_all(staging, entries)
    marker = _CopyMarker(entries=len(entries), history=status.history, replicas=replicas)
    await staging.put(COPY_COMPLETE, msgspec.json.encode(marker))
    return _Copy(name, staging, marker)


async def _entries(js: JetStreamContext, bucket: str) -> dict[str, bytes]:
    """Every current value of ``bucket`` (deleted and purged keys left out)."""
    kv = await js.key_value(bucket)

    async def value(key: str) -> bytes | None:
        try:
            return (await kv.get(key)).value or None
        except KeyNotFoundError:
            return None  # deleted or purged: its subject still lists a marker

    keys = await bucket_keys(js, bucket)
    found: dict[str, bytes] = {}
    for start in range(0, len(keys), _AT_ONCE):
        batch = keys[start : start + _AT_ONCE]
        for key, got in zip(batch, await asyncio.gather(*(value(key) for key in batch)), strict=True):
            if got is not None:
                found[key] = got
    return found


async def _put_all(kv: KeyValue, entries: dict[str, bytes]) -> None:
    """Put every entry, a few hundred in flight at a time (one after another took 13 s for
    20,000 entries)."""
    items = list(entries.items())
    for start in range(0, len(items), _AT_ONCE):
        await asyncio.gather(*(kv.put(key, value) for key, value in items[start : start + _AT_ONCE]))
