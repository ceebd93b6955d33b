"""Reading a whole stream, or a KV bucket's current values, once: an ordered consumer pushes
every message (with ``last_per_subject``, the last of each subject) and is gone with the reader.
One pass instead of a request per key: listing parked records or delivery records at scale was
a round trip per record (found by a scale audit)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from events.skips import skipping

log = structlog.get_logger(__name__)

READ_TIMEOUT = 5.0
KV_GONE = ("DEL", "PURGE")  # the KV-Operation header of a deleted or purged key's marker


async def scan(
    js: JetStreamContext, stream: str, filter_subject: str, *, last_per_subject: bool = False, after: int = 0
) -> AsyncIterator[Msg]:
    """Every message of ``stream`` on ``filter_subject`` as it stands now (with
    ``last_per_subject``: the last one of each subject, as a KV bucket's current values; with
    ``after``: only those after that stream sequence), through an ordered consumer (fast,
    nothing left on the server). Nothing when the stream does not exist."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return
    if not info.state.messages or info.state.last_seq <= after:
        return
    if after:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1, ack_policy=AckPolicy.NONE
        )
    else:
        policy = DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.ALL
        config = ConsumerConfig(deliver_policy=policy, ack_policy=AckPolicy.NONE)
    sub = await js.subscribe(
        filter_subject, stream=stream, ordered_consumer=True, config=config, pending_msgs_limit=100_000
    )
    try:
        consumer = await sub.consumer_info()
        if not consumer.num_pending and not (consumer.delivered and consumer.delivered.consumer_seq):
            return
        while True:
            try:
                msg = await sub.next_msg(timeout=READ_TIMEOUT)
            except TimeoutError:  # nothing more came: the end of what is there
                log.warning("stream_scan.timeout", stream=stream, after=after)
                return
            yield msg
            if msg.metadata.num_pending == 0:
                return
    finally:
        with skipping("stream_scan.unsubscribe"):  # the ordered consumer is ephemeral: gone with us anyway
            await sub.unsubscribe()


async def bucket_values(js: JetStreamContext, bucket: str) -> AsyncIterator[tuple[str, bytes]]:
    """Every key of the KV ``bucket`` with its current value, deleted and purged keys left out."""
    prefix = f"$KV.{bucket}."
    async for msg in scan(js, f"KV_{bucket}", prefix + ">", last_per_subject=True):
        if msg.data and (msg.headers or {}).get("KV-Operation") not in KV_GONE:
            yield msg.subject[len(prefix) :], msg.data
