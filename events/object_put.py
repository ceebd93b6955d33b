"""Replacing an object (a snapshot) that several processes may save under one name at once.

nats-py's ``ObjectStore.put`` looks up the object's metadata, writes its chunks under a new id,
writes the metadata, then purges the chunks of the metadata it looked up at the start. Two
processes saving the same name at once both looked up the same old metadata: the one whose
metadata lands second wins, and the other's chunks are named by no metadata any more, kept in
the bucket for good. Two API replicas save their view and report snapshots at the same log
positions (every ``SNAPSHOT_EVERY`` events after the same catch-up), so each such save left a
whole snapshot behind (found by the replicas audit: five saves at once of a 3 MB object left
18 MB in ``OBJ_rd_snapshots``).

Here the metadata is written only if no other writer's metadata landed since the look-up
(``Nats-Expected-Last-Subject-Sequence`` on the metadata subject): the loser purges its own
chunks and reports ``False`` (the winner's object stands; both were folds of the same log).
The object is written in nats-py's own format, so ``ObjectStore.get`` reads it unchanged.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from hashlib import sha256

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DEFAULT_CHUNK_SIZE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
)
from nats.nuid import NUID

from events.skips import skipping

WRONG_LAST_SEQUENCE = 10071  # JetStream's "wrong last sequence" error code
PURGE_SKIP = "object.purge_own_chunks"

_nuid = NUID()


async def put_unless_replaced(js: JetStreamContext, bucket: str, name: str, data: bytes) -> bool:
    """Store ``data`` as ``name``; False (nothing of ours left behind) if another writer
    replaced the object while this one wrote it. Other failures raise, after purging what
    this call wrote."""
    stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
    meta_subject = OBJ_META_PRE_TEMPLATE.format(bucket=bucket, obj=base64.urlsafe_b64encode(name.encode()).decode())
    previous: api.ObjectInfo | None = None
    last_seq = 0  # no metadata yet: the subject must still be empty when ours lands
    try:
        found = await js.get_last_msg(stream, meta_subject)
    except NotFoundError:
        pass
    else:
        last_seq = int(found.seq or 0)
        if found.data:
            previous = api.ObjectInfo.from_response(json.loads(found.data))

    nuid = _nuid.next().decode()
    chunk_subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=nuid)
    digest = sha256()
    chunks = 0
    try:
        for start in range(0, len(data), OBJ_DEFAULT_CHUNK_SIZE):
            chunk = data[start : start + OBJ_DEFAULT_CHUNK_SIZE]
            digest.update(chunk)
            await js.publish(chunk_subject, chunk)
            chunks += 1
        info = api.ObjectInfo(
            name=name,
            bucket=bucket,
            nuid=nuid,
            size=len(data),
            mtime=datetime.now(UTC).isoformat(),
            chunks=chunks,
            digest=OBJ_DIGEST_TEMPLATE.format(digest=base64.urlsafe_b64encode(digest.digest()).decode()),
            options=api.ObjectMetaOptions(max_chunk_size=OBJ_DEFAULT_CHUNK_SIZE),
        )
        headers = {
            api.Header.ROLLUP.value: "sub",
            api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(last_seq),
        }
        await js.publish(meta_subject, json.dumps(info.as_dict()).encode(), headers=headers)
    except APIError as err:
        await _purge(js, stream, chunk_subject)
        if err.err_code == WRONG_LAST_SEQUENCE:
            return False
        raise
    except BaseException:
        await _purge(js, stream, chunk_subject)
        raise
    if previous is not None and not previous.deleted and previous.nuid:
        await js.purge_stream(stream, subject=OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=previous.nuid))
    return True


async def _purge(js: JetStreamContext, stream: str, subject: str) -> None:
    """Our own chunks, after a failed write. A purge that fails too must not hide why the write
    failed, but its chunks stay in the bucket for good: said (``object.purge_own_chunks``, the
    stream and subject an operator purges by hand) and counted."""
    with skipping(PURGE_SKIP, stream=stream, subject=subject):
        await js.purge_stream(stream, subject=subject)
