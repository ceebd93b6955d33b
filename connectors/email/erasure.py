"""Erasure hook: a customer's attachment bodies leave the object store for good.

Attachments are stored under their sha256 (``nats-object://<bucket>/<sha256>``, see
``connectors.email.body.attachment_url``). An object store's ``delete`` purges the chunks,
which removes the messages but leaves their bytes in the stream's files until the block is
compacted; so the chunks are first deleted one by one with JetStream's secure erase (the
server overwrites them), then the object is marked deleted. Content addressing means one
body is shared by everyone who sent the very same file: it goes for all of them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable

import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectDeletedError, ObjectNotFoundError

from events.msg_get import stored_messages

log = structlog.get_logger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"^nats-object://([A-Za-z0-9_-]+)/([0-9a-f]{64})$")


def attachment_ref(url: str | None, sha256: str | None, default_bucket: str) -> tuple[str, str] | None:
    """(bucket, object name) of an attachment as a message carries it; None if it is not ours."""
    if url and (m := _URL.match(url)):
        return m.group(1), m.group(2)
    if sha256 and _SHA256.match(sha256):
        return default_bucket, sha256
    return None


async def erase_attachments(js: JetStreamContext, refs: Iterable[tuple[str, str]]) -> int:
    """Erase every (bucket, object name) in ``refs``; returns how many objects held data."""
    erased = 0
    for bucket, name in sorted(set(refs)):
        try:
            store = await js.object_store(bucket)
        except (BucketNotFoundError, NotFoundError):
            continue
        try:
            info = await store.get_info(name, show_deleted=True)
        except (ObjectNotFoundError, NotFoundError):
            continue
        stream = f"OBJ_{bucket}"
        chunks = f"$O.{bucket}.C.{info.nuid}" if info.nuid else None
        count = 0
        if chunks is not None:
            async for seq, _ in stored_messages(js, stream, chunks):
                with contextlib.suppress(NotFoundError):
                    await js.delete_msg(stream, seq)  # secure erase: overwritten on disk
                    count += 1
        if not info.deleted:
            try:
                await store.delete(name)  # marks it deleted, then purges the (now empty) chunk subject
            except (ObjectNotFoundError, ObjectDeletedError, NotFoundError):
                pass  # deleted meanwhile
            except NatsError as err:  # e.g. a role that may not purge: the chunks are erased already
                log.warning("email.attachment_delete_incomplete", bucket=bucket, error=type(err).__name__)
        erased += 1 if count or not info.deleted else 0
        log.info("email.attachment_erased", bucket=bucket, chunks=count)
    return erased
