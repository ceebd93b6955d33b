"""A stream's messages read one ``$JS.API.STREAM.MSG.GET`` at a time (``next_by_subj``): no
consumer, so it reads a work-queue stream its workers consume from (a second consumer there
is refused) and a stream without ``allow_direct``. For the rare full reads (an erasure's);
``events.direct`` batches where the stream allows direct gets."""

from __future__ import annotations

from collections.abc import AsyncIterator

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError


async def stored_messages(
    js: JetStreamContext, stream: str, filter_subject: str, *, limit: int = 1_000_000
) -> AsyncIterator[tuple[int, bytes]]:
    """(sequence, data) of every message of ``stream`` on ``filter_subject``, oldest first.
    Nothing when the stream does not exist."""
    seq = 1
    for _ in range(limit):
        try:
            raw = await js.get_msg(stream, seq=seq, subject=filter_subject, next=True)
        except NotFoundError:  # past the last one (or no such stream)
            return
        if not raw.seq or int(raw.seq) < seq:
            return
        yield int(raw.seq), raw.data or b""
        seq = int(raw.seq) + 1
