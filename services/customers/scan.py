"""Reading a whole stream (or bucket) once, and deleting single messages for good: the tools of
an erasure (``services.customers.erase``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from events.msg_get import stored_messages
from events.skips import skipping

log = structlog.get_logger(__name__)

READ_TIMEOUT = 5.0
# JetStream's "no message found" (a get of a deleted message).
MESSAGE_NOT_FOUND = 10037


async def scan(
    js: JetStreamContext, stream: str, filter_subject: str, *, last_per_subject: bool = False
) -> AsyncIterator[Msg]:
    """Every message of ``stream`` on ``filter_subject`` as it stands now (with
    ``last_per_subject``: the last one of each subject, as a KV bucket's current values),
    through an ordered consumer (fast, nothing left on the server). Nothing when the stream
    does not exist."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return
    if not info.state.messages:
        return
    policy = DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.ALL
    sub = await js.subscribe(
        filter_subject,
        stream=stream,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=policy, ack_policy=AckPolicy.NONE),
        pending_msgs_limit=100_000,
    )
    try:
        consumer = await sub.consumer_info()
        if not consumer.num_pending and not (consumer.delivered and consumer.delivered.consumer_seq):
            return
        while True:
            try:
                msg = await sub.next_msg(timeout=READ_TIMEOUT)
            except TimeoutError:
                log.warning("erase.scan_timeout", stream=stream)  # nothing more came: end of what is there
                return
            yield msg
            if msg.metadata.num_pending == 0:
                return
    finally:
        with skipping("customers.scan_unsubscribe"):  # the ordered consumer is ephemeral: gone with us anyway
            await sub.unsubscribe()


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
