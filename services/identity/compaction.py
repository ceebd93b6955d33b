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
copy once it is and the original was deleted or recreated but not yet refilled to the end. A
copy left behind after a finished refill (the bucket says so: ``_meta.compacted`` holds the
copy's token) or whose original still stands is dropped, never refilled from: the mappings
made since would be lost.
"""

from __future__ import annotations

import asyncio
import uuid
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

COPY_SUFFIX = "_compact"
COPY_COMPLETE = "_meta.copy_complete"  # in the copy only: what the refill must find
COMPACTED = "_meta.compacted"  # in the bucket: the token of the copy its refill was checked against
_AT_ONCE = 256


class CompactionFailed(RuntimeError):
    """The copy or the refill does not hold what it should; the copy is kept for a rerun."""


class _CopyMarker(msgspec.Struct, frozen=True):
    entries: int
    history: int
    replicas: int
    original_created: str = ""  # the stream copied from: while it stands, the copy is not needed
    token: str = ""  # written into the refilled bucket (COMPACTED) once its refill was checked


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
        info = await js.consumer_info(stream, subjects.INTAKE_DURABLE)
    except NotFoundError:
        return 0  # no intake ever ran here
    return info.num_waiting or 0


async def compact(directory: IdentityDirectory) -> int:
    """Rewrite ``directory``'s bucket from a complete staging copy; returns the entries kept."""
    js = directory.js
    bucket = directory.bucket
    copy = await _unfinished(js, bucket)
    if copy is None:
        copy = await _fresh_copy(js, bucket)
        await js.delete_key_value(bucket)
        created = False
    else:
        created = await _created(js, bucket) is not None
    entries = {key: value for key, value in (await _entries(js, copy.bucket)).items() if key != COPY_COMPLETE}
    if len(entries) != copy.marker.entries:
        raise CompactionFailed(
            f"the copy in {copy.bucket} holds {len(entries)} entries, not the {copy.marker.entries} it was made with"
        )
    if created:
        directory.kv = await js.key_value(bucket)  # recreated by a run cut short (or by a set-up): refill it
    else:
        directory.kv = await js.create_key_value(
            KeyValueConfig(bucket=bucket, history=copy.marker.history, replicas=copy.marker.replicas)
        )
    await _put_all(directory.kv, entries)
    back = await _entries(js, bucket)
    missing = [key for key, value in entries.items() if back.get(key) != value]
    if missing:
        raise CompactionFailed(
            f"{bucket} lacks {len(missing)} of the {len(entries)} entries after the refill; "
            f"the copy stays in {copy.bucket}: run the command again"
        )
    # Said in the bucket before the copy goes: a run cut short between the two finds the copy
    # stale by this, rather than refilling from it over mappings made since.
    await directory.kv.put(COMPACTED, copy.marker.token.encode())
    await js.delete_key_value(copy.bucket)
    log.info("identity.compacted", entries=len(entries))
    return len(entries)


async def recreate_if_cut_short(js: JetStreamContext, bucket: str) -> KeyValue | None:
    """``bucket`` created again (empty) when a run was cut short between its delete and its
    create and a complete copy waits to refill it; None when that is not the case. Only the
    compaction may go on from here: it finds the copy and refills the bucket from it."""
    if await _created(js, bucket) is not None:
        return None
    try:
        entry = await (await js.key_value(f"{bucket}{COPY_SUFFIX}")).get(COPY_COMPLETE)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    marker = msgspec.json.decode(entry.value or b"", type=_CopyMarker)
    return await js.create_key_value(KeyValueConfig(bucket=bucket, history=marker.history, replicas=marker.replicas))


async def _created(js: JetStreamContext, bucket: str) -> str | None:
    """When ``bucket``'s stream was created (None: it does not exist)."""
    try:
        info = await js.stream_info(f"KV_{bucket}")
    except NotFoundError:
        return None
    return str(info.created)


async def _unfinished(js: JetStreamContext, bucket: str) -> _Copy | None:
    """An earlier run's complete copy whose refill did not finish, or None. The original is
    untouched while a copy is being made, so an incomplete copy, or a complete one while the
    original is the very stream it was copied from, is simply dropped; a complete one whose
    original was refilled to the end (``COMPACTED`` names it) is stale and dropped too."""
    name = f"{bucket}{COPY_SUFFIX}"
    try:
        found = await js.key_value(name)
        entry = await found.get(COPY_COMPLETE)
    except BucketNotFoundError:
        return None
    except KeyNotFoundError:
        log.info("identity.compact_copy_dropped", copy=name, reason="an earlier copy was cut short")
        await js.delete_key_value(name)
        return None
    marker = msgspec.json.decode(entry.value or b"", type=_CopyMarker)
    created = await _created(js, bucket)
    stale = created == marker.original_created
    if created is not None and not stale:
        try:
            stale = (await (await js.key_value(bucket)).get(COMPACTED)).value == marker.token.encode()
        except KeyNotFoundError:
            stale = False
    if stale:
        log.info("identity.compact_copy_dropped", copy=name, reason="the bucket it was made from is whole")
        await js.delete_key_value(name)
        return None
    log.info("identity.compact_resumed", copy=name, reason="an earlier run stopped before its refill ended")
    return _Copy(name, found, marker)


async def _fresh_copy(js: JetStreamContext, bucket: str) -> _Copy:
    """A complete copy of ``bucket`` made now (the original stays untouched until it is)."""
    name = f"{bucket}{COPY_SUFFIX}"
    info = await js.stream_info(f"KV_{bucket}")
    replicas = info.config.num_replicas or 1
    staging = await js.create_key_value(KeyValueConfig(bucket=name, history=1, replicas=replicas))
    # Legacy keys (addresses in clear) are not kept: ``migrate_all`` moved them first.
    entries = {
        key: value
        for key, value in (await _entries(js, bucket)).items()
        if legacy_identity(key) is None and key != COMPACTED
    }
    await _put_all(staging, entries)
    marker = _CopyMarker(
        entries=len(entries),
        history=max(1, info.config.max_msgs_per_subject or 1),
        replicas=replicas,
        original_created=str(info.created),
        token=uuid.uuid4().hex,
    )
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
