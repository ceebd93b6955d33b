"""The rebuild's writer process: a whole-store rebuild folds and writes in a second process.

One Python process cannot read the log at the replay ceiling and fold and write it as well:
reading, decoding and opening sealed fields take about as much CPU as folding and writing. So
``rebuild timelines`` reads in its own process and hands each batch, as msgpack, through a
pipe (``bulk_pipe``; the reader's side is ``bulk_parent.BulkWriter``) to this process,
``python -m services.timelines.bulk``, which applies it to the fresh shadow copy with a
``BatchApplier``: the same fold, the same exactly-once checkpoint and the same quarantine
rules as the live projector, so the rebuilt rows are the live rows. Nothing of NATS or the
service stack is imported here (0.4 s of a rebuild's start, aiohttp's SSL set-up included).

The parent decides when this process ends: ``Finish``, or its end of the pipe closed (then
nothing is swapped in). Its stdout carries the replies only.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from typing import TYPE_CHECKING, BinaryIO, cast

import structlog

from events.codec import Undecodable, decode_log_event
from events.model import UnknownEvent
from events.stored import StoredEvent
from services.timelines.applier import BatchApplier
from services.timelines.bulk_pipe import LENGTH, Applied, Batch, Failed, Open, Refused, Request, Shipped, frame
from services.timelines.bulk_pipe import requests as _requests

if TYPE_CHECKING:
    from services.timelines.postgres import PostgresTimelineStore
    from services.timelines.sqlite import SqliteTimelineStore
    from services.timelines.store import TimelineStore

__all__ = ["main"]

log = structlog.get_logger("relaydesk.rebuild.writer")


class _WriterApplier(BatchApplier):
    """The live projector's rules without its NATS connection: what cannot be applied is
    reported back to the reader (which has the connection) to be quarantined there."""

    def __init__(self, store: TimelineStore) -> None:
        super().__init__(store)
        self.refused: list[Refused] = []

    async def _quarantine(self, stored: StoredEvent, error: str) -> None:
        self.refused.append(Refused(seq=stored.seq, subject=stored.subject, error=error))


async def _open(request: Open) -> TimelineStore:
    store: SqliteTimelineStore | PostgresTimelineStore
    if request.backend == "sqlite":
        from services.timelines.sqlite import SqliteTimelineStore

        store = await SqliteTimelineStore.open(request.target, suffix=request.name)
    else:
        from services.timelines.postgres import PostgresTimelineStore

        store = await PostgresTimelineStore.open(request.target, schema=request.name)
    await store.for_bulk_load()
    return store


def _decoded(items: list[Shipped], refused: list[Refused]) -> list[StoredEvent]:
    """The batch's events, those that came as stored decoded here; one that does not decode
    is left out and reported back, to be quarantined as the reader would have."""
    out: list[Shipped] = []
    for item in items:
        if item.raw is not None:
            event = decode_log_event(item.raw, subject=item.subject)
            if isinstance(event, UnknownEvent):  # a newer writer's (folds to nothing), or undecodable
                if isinstance(event, Undecodable):
                    refused.append(Refused(item.seq, item.subject, f"cannot decode: {event.error}"))
                continue
            item.event, item.raw = event, None
        out.append(item)
    return cast("list[StoredEvent]", out)  # read alike (see Shipped)


def _next_request(source: BinaryIO) -> Request | None:
    """The next request on ``source`` (blocking; None: the parent closed the pipe)."""
    head = source.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    (length,) = LENGTH.unpack(head)
    body = source.read(length)
    if len(body) < length:
        return None
    return _requests.decode(body)


async def _serve(source: BinaryIO, replies: BinaryIO) -> int:
    loop = asyncio.get_running_loop()
    request = await loop.run_in_executor(None, _next_request, source)
    if not isinstance(request, Open):
        return 2
    store = await _open(request)
    try:
        applier = _WriterApplier(store)
        applier.position = await store.checkpoint(applier.key)
        replies.write(frame(Applied(checkpoint=applier.position)))
        # Reading and decoding the next batch (on a thread) overlaps applying this one:
        # SQLite and psycopg wait for the database without the GIL.
        pending = loop.run_in_executor(None, _next_request, source)
        while True:
            request = await pending
            if request is None:
                return 3  # the parent went away without Finish: nothing is swapped in
            if not isinstance(request, Batch):
                return 0
            pending = loop.run_in_executor(None, _next_request, source)
            chunk = _decoded(request.events, applier.refused)
            try:
                await applier.apply_batch(chunk, through=request.through)
            except Exception as err:
                log.error("rebuild.writer_failed", through=request.through, error=repr(err), exc_info=True)
                replies.write(frame(Failed(error=repr(err))))
                return 1
            replies.write(frame(Applied(checkpoint=applier.position, refused=applier.refused)))
            applier.refused = []
    finally:
        await store.close()


def main() -> int:
    # The parent decides when this process ends (Ctrl-C reaches the whole process group: it
    # kills us in ``abort``; a parent gone leaves our stdin at its end, and we stop there).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Replies go on the real stdout; anything printed by mistake goes to stderr instead.
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from services import logs

    logs.configure(os.environ.get("RELAYDESK_LOG_LEVEL") or "warning")
    # Every object alive now lives as long as the process: keep the collector from walking
    # them again and again, and let it run less often (a batch allocates ~10^5 objects).
    gc.freeze()
    gc.set_threshold(100_000, 50, 1_000)
    return asyncio.run(_serve(sys.stdin.buffer, replies))


if __name__ == "__main__":
    raise SystemExit(main())
