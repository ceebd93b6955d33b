"""Reading a whole stream (or bucket) once (``events.stream_scan``), and deleting single messages
for good: the tools of an erasure (``services.customers.erase``)."""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from events.msg_get import stored_messages
from events.stream_scan import scan as scan

log = structlog.get_logger(__name__)

# JetStream's "no message found" (a get of a deleted message).
MESSAGE_NOT_FOUND = 10037


async def erase_msg(js: JetStreamContext, stream: str, seq: int) -> bool:
    """Delete one message with JetStream's secure erase (``$JS.API.STREAM.MSG.DELETE`` without
    ``no_erase``: the server overwrites its bytes on disk). False if it was gone already (found
    by a retry audit: an erasure sent twice at once was a 500 for the one that came second to a
    message, "sequence N not found")."""
    try:
        return bool(await js.delete_msg(stream, seq))
    except NotFoundError:
        return False
    except APIError:
        # Deleted by someone else just now, JetStream answers 400 "sequence N not found" or
        # 500 "message delete failed" rather than 404: gone is gone; anything else is raised.
        if await _gone(js, stream, seq):
            return False
        raise


async def _gone(js: JetStreamContext, stream: str, seq: int) -> bool:
    try:
        await js.get_msg(stream, seq)
    except NotFoundError:
        return True
    except APIError as err:
        return err.err_code == MESSAGE_NOT_FOUND
    return False


async def erase_subject(js: JetStreamContext, stream: str, subject: str, *, limit: int = 100_000) -> int:
    """Securely erase every message of ``stream`` on ``subject`` (one subject, no wildcard)."""
    erased = 0
    async for seq, _ in stored_messages(js, stream, subject, limit=limit):
        erased += await erase_msg(js, stream, seq)
    return erased
