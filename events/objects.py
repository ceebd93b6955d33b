"""Reading an object (a snapshot) from a JetStream object store without hanging, and saving
one whose loss only costs time.

nats-py's ``ObjectStore.get`` reads the object's chunks from an ordered consumer and waits for
them with no timeout. When the writer replaces the object between the reader's look at its
metadata and its subscription (a router saving a snapshot while a standby starts), the old
chunks are purged and the reader waits forever: seen as a standby router that never started.
Here each attempt has a deadline that grows with the object's size, and a replaced object is
read again under its new metadata.
"""

from __future__ import annotations

import asyncio

import structlog
from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError

from events.object_put import put_unless_replaced
from events.skips import count_skip

log = structlog.get_logger(__name__)

# Seconds an attempt may take: a floor, plus the object's size at a slow reading rate. Found by
# an audit: nats-py's ObjectStore.get read a 114 MB snapshot at 3.5 MB/s on a loaded machine,
# past a 5 MB/s deadline three times, and a good snapshot was thrown away for a replay of the
# whole log (minutes); a stall is told later at 1 MB/s, which costs far less.
BASE_TIMEOUT_S = 10.0
SLOW_BYTES_PER_S = 1_000_000
ATTEMPTS = 3


class ObjectUnreadable(Exception):
    """The object did not arrive within its deadlines (it kept being replaced, or NATS stalled)."""


async def read_object(js: JetStreamContext, bucket: str, name: str, *, attempts: int = ATTEMPTS) -> bytes | None:
    """The object's bytes, or None if there is no such object. Raises ``ObjectUnreadable``."""
    obs = await js.object_store(bucket)
    for attempt in range(1, attempts + 1):
        try:
            info = await obs.get_info(name)
        except ObjectNotFoundError:
            return None
        timeout = BASE_TIMEOUT_S + (info.size or 0) / SLOW_BYTES_PER_S
        try:
            result = await asyncio.wait_for(obs.get(name), timeout)
        except ObjectNotFoundError:
            return None
        except TimeoutError:
            log.warning("object.read_timed_out", bucket=bucket, name=name, attempt=attempt, timeout_s=round(timeout, 1))
            continue
        return result.data or b""
    raise ObjectUnreadable(f"{bucket}/{name}: no complete read in {attempts} attempts")


async def save_object(js: JetStreamContext, bucket: str, name: str, data: bytes, *, skip_as: str, seq: int) -> bool:
    """Store ``data`` as ``name``; False when that failed, logged (bucket, name, the log
    sequence it reflects) and counted as ``skip_as``. For snapshots: the log stays the truth,
    and the next one may succeed."""
    try:
        stored = await put_unless_replaced(js, bucket, name, data)
    except Exception as err:
        log.warning("object.not_saved", where=skip_as, bucket=bucket, name=name, seq=seq, error=repr(err))
        count_skip(skip_as)
        return False
    if not stored:
        # Another process (an API replica at the same log position) saved it meanwhile: theirs stands.
        log.info("object.saved_by_another", where=skip_as, bucket=bucket, name=name, seq=seq)
    return stored
