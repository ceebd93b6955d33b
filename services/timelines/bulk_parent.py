"""The reader's side of a whole-store rebuild's writer process (``services.timelines.bulk``):
``BulkWriter`` starts it, hands it batches as read (``bulk_pipe``) and collects its replies.

The reader sends the next batch while the writer applies this one (at most ``IN_FLIGHT``
requests are on their way). The child's stdout is the reply pipe only: anything else it
prints goes to stderr.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
from typing import TYPE_CHECKING, cast

import msgspec
import structlog

from events.model import LogEvent, UnknownEvent
from events.personal.cipher import PERSONAL_FIELDS
from events.replay import Arrived, decode_arrivals
from events.skips import count_skip
from services.timelines.bulk_pipe import LENGTH, Batch, Failed, Finish, Open, Refused, Shipped, frame
from services.timelines.bulk_pipe import replies as _replies

if TYPE_CHECKING:
    from events.store import EventStore
    from services.timelines.store import TimelineStore

log = structlog.get_logger("relaydesk.rebuild.writer")

IN_FLIGHT = 2  # requests sent and not yet answered: one batch applying, one waiting in the pipe
PIPE_BUFFER = 64 * 1024 * 1024  # what the reader may queue towards the writer (IN_FLIGHT bounds it)
PIPE_SIZE = 1024 * 1024


def _as_stored() -> frozenset[bytes]:
    """The tags of the events with nothing to open: they cross the pipe as stored. Not
    ``customer_erased``: the cipher must see it, in order, to forget the erased keys."""
    tags: set[bytes] = set()
    for cls in LogEvent.__args__:
        tag = cls.__struct_config__.tag
        if cls not in PERSONAL_FIELDS and isinstance(tag, str) and tag != "customer_erased":
            tags.add(tag.encode())
    return frozenset(tags)


AS_STORED = _as_stored()
TAG_AT = b'{"type":"'  # msgspec writes a struct's tag first
_TAG_FROM = len(TAG_AT)


def crosses_as_stored(data: bytes) -> bool:
    """Whether an event, as stored, has nothing to open (its tag, read off the JSON without
    decoding it, is in ``AS_STORED``)."""
    return data.startswith(TAG_AT) and data[_TAG_FROM : data.find(b'"', _TAG_FROM)] in AS_STORED


class WriterFailed(RuntimeError):
    """The writer process reported an error or died; the fresh copy is left unswapped."""


def describe(fresh: TimelineStore) -> tuple[str, str, str] | None:
    """(backend, target, name) of a shadow copy from ``begin_rebuild``, to open it elsewhere;
    None for a store of another kind (a test's), which has no writer process."""
    from services.timelines.sqlite import SqliteTimelineStore

    if isinstance(fresh, SqliteTimelineStore):
        return "sqlite", str(fresh.path), fresh.suffix
    from services.timelines.postgres import PostgresTimelineStore

    if isinstance(fresh, PostgresTimelineStore):
        return "postgresql", fresh.dsn, fresh.schema
    return None


class BulkWriter:
    """The parent's handle on a writer process. ``send`` batches in log order, ``flush`` for
    the checkpoint they reached, ``finish`` (or ``abort``) at the end."""

    def __init__(self, process: asyncio.subprocess.Process, checkpoint: int) -> None:
        self.process = process
        self.checkpoint = checkpoint  # as the writer last reported it
        self.refused: list[Refused] = []  # for the caller to quarantine
        self._in_flight = 0

    @classmethod
    async def start(cls, fresh: TimelineStore, *, reader: str) -> BulkWriter:
        """Start the writer process on ``fresh``. Returns at once: the process starts (its
        imports take a few tenths of a second) while the caller reads the first batch; its
        answer to ``Open`` comes back like a batch's."""
        described = describe(fresh)
        if described is None:
            raise TypeError(f"no writer process for {type(fresh).__name__}")
        backend, target, name = described
        checkpoint = await fresh.checkpoint()  # before the process: nothing to stop if it fails
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.timelines.bulk",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # It imports what this process could, wherever that came from.
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        _widen_pipes(process)
        writer = cls(process, checkpoint)
        try:
            await writer._write(Open(backend=backend, target=target, name=name, reader=reader))
        except BaseException:
            await writer.abort()
            raise
        writer._in_flight = 1
        return writer

    async def send(self, store: EventStore, arrived: list[Arrived]) -> None:
        """Hand a batch over, as read (``events.replay.replay_arrivals``): events with personal
        fields decoded and opened here (quarantined here if they do not decode), the others
        as stored; events of newer writers, which fold to nothing, stay here. Waits while
        ``IN_FLIGHT`` requests are on their way."""
        if not arrived:
            return
        # One pass sorts the batch: as stored (most events) or to open, the latter's places
        # kept (None) and filled once opened, all together.
        shipped: list[Shipped | None] = []
        to_open: list[Arrived] = []
        for a in arrived:
            if crosses_as_stored(a.data):
                shipped.append(Shipped(a.seq, a.subject, raw=a.data))
            else:
                shipped.append(None)
                to_open.append(a)
        events: list[Shipped] = []
        if to_open:
            opened = iter(await store.opened_all(await decode_arrivals(store, to_open)))
            for item in shipped:
                if item is not None:
                    events.append(item)
                    continue
                stored = next(opened)
                if not isinstance(stored.event, UnknownEvent):
                    events.append(Shipped(stored.seq, stored.subject, event=stored.event))
        else:
            events = cast("list[Shipped]", shipped)  # nothing to open: no None in it
        while self._in_flight >= IN_FLIGHT:
            await self._receive()
        await self._write(Batch(events=events, through=arrived[-1].seq))
        self._in_flight += 1

    async def flush(self) -> int:
        """Wait for every batch sent; the checkpoint they brought the fresh copy to."""
        while self._in_flight:
            await self._receive()
        return self.checkpoint

    async def finish(self) -> int:
        checkpoint = await self.flush()
        await self._write(Finish())
        self._close_stdin()
        code = await self.process.wait()
        if code != 0:
            raise WriterFailed(f"the rebuild's writer process exited with {code}")
        return checkpoint

    async def abort(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        self._close_stdin()
        await self.process.wait()

    def _close_stdin(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    async def _write(self, message: msgspec.Struct) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(frame(message))
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as err:
            code = await self.process.wait()
            raise WriterFailed(f"the rebuild's writer process exited with {code}") from err

    async def _receive(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            (length,) = LENGTH.unpack(await stdout.readexactly(LENGTH.size))
            reply = _replies.decode(await stdout.readexactly(length))
        except asyncio.IncompleteReadError as err:
            code = await self.process.wait()
            raise WriterFailed(f"the rebuild's writer process exited with {code}") from err
        self._in_flight -= 1
        if isinstance(reply, Failed):
            raise WriterFailed(f"the rebuild's writer process failed: {reply.error}")
        self.checkpoint = reply.checkpoint
        self.refused.extend(reply.refused)


def _widen_pipes(process: asyncio.subprocess.Process) -> None:
    """Let a whole batch or two wait in the pipe to the writer instead of in front of it.

    ``drain`` would otherwise hold the reader until the writer had taken nearly all of a batch
    (64 KiB at a time, on a thread that waits for the GIL while the fold runs): the reader
    could not decode the next batch meanwhile. ``IN_FLIGHT`` bounds what waits. A bigger pipe
    (Linux: up to ``/proc/sys/fs/pipe-max-size``, 1 MiB by default) means fewer reads there."""
    stdin = process.stdin
    if stdin is None:
        return
    stdin.transport.set_write_buffer_limits(high=PIPE_BUFFER)
    pipe = stdin.transport.get_extra_info("pipe")
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if pipe is None or setsize is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), setsize, PIPE_SIZE)
    except OSError as err:  # above the system's limit, or not a pipe: the default size works
        log.debug("rebuild.pipe_size_unchanged", error=repr(err))
        count_skip("rebuild.pipe_size")
