"""The rebuild's writer process: a whole-store rebuild folds and writes in a second process.

One Python process cannot read the log at the replay ceiling and fold and write it as well:
reading, decoding and opening sealed fields take about as much CPU as folding and writing. So
``rebuild timelines`` reads in its own process and hands each batch, as msgpack, through a
pipe to a writer process (``python -m services.timelines.bulk``) that applies it to the fresh
shadow copy with ``Projector.apply_batch``: the same fold, the same exactly-once checkpoint
and the same quarantine rules as the live projector, so the rebuilt rows are the live rows.
Events with personal fields cross decoded and opened (the reader holds the keys); the others
cross as stored and the writer decodes them, so nothing is decoded twice. The reader sends
the next batch while the writer applies this one (at most ``IN_FLIGHT`` requests are on their
way).

The pipe carries frames: a 4-byte big-endian length, then a msgpack ``Request`` (parent to
child) or ``Reply`` (child to parent). The first request says which store to open (a DSN
never goes on a command line, where ``ps`` shows it). The child's stdout is the reply pipe
only: anything else it prints goes to stderr.

Opened personal data crosses the pipe in clear, as it does into the projection itself: the
pipe is private to the two processes.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import signal
import struct
import sys
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import msgspec
import structlog

from events.codec import Undecodable, decode_log_event
from events.model import LogEvent, UnknownEvent
from events.replay import Arrived, decode_arrivals
from events.skips import count_skip
from events.stored import StoredEvent

if TYPE_CHECKING:
    from events.store import EventStore
    from services.timelines.store import TimelineStore

log = structlog.get_logger("relaydesk.rebuild.writer")

IN_FLIGHT = 2  # requests sent and not yet answered: one batch applying, one waiting in the pipe
PIPE_BUFFER = 64 * 1024 * 1024  # what the reader may queue towards the writer (IN_FLIGHT bounds it)
PIPE_SIZE = 1024 * 1024
_LENGTH = struct.Struct(">I")


class Open(msgspec.Struct, tag="open"):
    backend: str  # "sqlite" | "postgresql"
    target: str  # the file, or the DSN
    name: str  # the shadow tables' suffix, or the shadow schema
    reader: str  # the quarantine's reader name for events the store refuses


class Shipped(msgspec.Struct, array_like=True, omit_defaults=True):
    """A ``StoredEvent`` as it crosses the pipe, and as the writer reads it: msgpack decodes
    straight into it, and the fold reads ``seq``, ``subject`` and ``event`` from it as from a
    ``StoredEvent`` (no second object per event on the writer's side). An event with personal
    fields comes decoded and opened (``event``); one with none comes as stored (``raw``, the
    JSON on the log) and the writer decodes it: the reader does not decode it at all."""

    seq: int
    subject: str
    event: LogEvent | None = None
    raw: bytes | None = None


class Batch(msgspec.Struct, tag="batch"):
    events: list[Shipped]
    through: int  # the checkpoint after this batch (its last sequence, events or not)


class Finish(msgspec.Struct, tag="finish"):
    pass


Request = Open | Batch | Finish


class Refused(msgspec.Struct):
    seq: int
    subject: str
    error: str


class Applied(msgspec.Struct, tag="applied"):
    checkpoint: int
    refused: list[Refused] = []  # events the store kept refusing: the parent quarantines them


class Failed(msgspec.Struct, tag="failed"):
    error: str


Reply = Applied | Failed

_encoder = msgspec.msgpack.Encoder()
_requests = msgspec.msgpack.Decoder(Request)
_replies = msgspec.msgpack.Decoder(Reply)


class WriterFailed(RuntimeError):
    """The writer process reported an error or died; the fresh copy is left unswapped."""


def _as_stored() -> frozenset[bytes]:
    """The tags of the events with nothing to open: they cross the pipe as stored. Not
    ``customer_erased``: the cipher must see it, in order, to forget the erased keys."""
    from events.personal.cipher import PERSONAL_FIELDS

    tags: set[bytes] = set()
    for cls in LogEvent.__args__:
        tag = cls.__struct_config__.tag
        if cls not in PERSONAL_FIELDS and isinstance(tag, str) and tag != "customer_erased":
            tags.add(tag.encode())
    return frozenset(tags)


AS_STORED = _as_stored()
_TAG_AT = b'{"type":"'  # msgspec writes a struct's tag first


def _tag(data: bytes) -> bytes:
    """The event's tag, read off the stored JSON without decoding it (b"" if not there)."""
    if not data.startswith(_TAG_AT):
        return b""
    return data[len(_TAG_AT) : data.find(b'"', len(_TAG_AT))]


def _frame(message: msgspec.Struct) -> bytes:
    body = _encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


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


# -- the parent's side ------------------------------------------------------------------------


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
        writer = cls(process, await fresh.checkpoint())
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
        as_stored = [_tag(a.data) in AS_STORED for a in arrived]
        to_open = [a for a, raw in zip(arrived, as_stored, strict=True) if not raw]
        opened = iter(await store.opened_all(await decode_arrivals(store, to_open)) if to_open else ())
        events: list[Shipped] = []
        for a, raw in zip(arrived, as_stored, strict=True):
            if raw:
                events.append(Shipped(a.seq, a.subject, raw=a.data))
                continue
            stored = next(opened)
            if not isinstance(stored.event, UnknownEvent):
                events.append(Shipped(a.seq, a.subject, event=stored.event))
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
            stdin.write(_frame(message))
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as err:
            code = await self.process.wait()
            raise WriterFailed(f"the rebuild's writer process exited with {code}") from err

    async def _receive(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            (length,) = _LENGTH.unpack(await stdout.readexactly(_LENGTH.size))
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


# -- the child's side ---------------------------------------------------------------------


class _Refusals:
    """Stands in for the event store in the child's projector: it only ever quarantines, and
    the parent (which has the NATS connection) does that for it."""

    def __init__(self, reader: str) -> None:
        self.reader = reader
        self.quarantine = self
        self.refused: list[Refused] = []

    async def record(self, reader: str, seq: int, subject: str, error: str, **_: Any) -> None:
        self.refused.append(Refused(seq=seq, subject=subject, error=error))


async def _open(request: Open) -> TimelineStore:
    if request.backend == "sqlite":
        from services.timelines.sqlite import SqliteTimelineStore

        return await SqliteTimelineStore.open(request.target, suffix=request.name)
    from services.timelines.postgres import PostgresTimelineStore

    store = await PostgresTimelineStore.open(request.target, schema=request.name)
    store.bulk_load = True  # a fresh shadow schema, written from empty in log order (see there)
    return store


def _decoded(items: list[Shipped], refusals: _Refusals) -> list[StoredEvent]:
    """The batch's events, those that came as stored decoded here; one that does not decode
    is left out and reported back, to be quarantined as the reader would have."""
    out: list[Shipped] = []
    for item in items:
        if item.raw is not None:
            event = decode_log_event(item.raw, subject=item.subject)
            if isinstance(event, UnknownEvent):  # a newer writer's (folds to nothing), or undecodable
                if isinstance(event, Undecodable):
                    refusals.refused.append(Refused(item.seq, item.subject, f"cannot decode: {event.error}"))
                continue
            item.event, item.raw = event, None
        out.append(item)
    return cast("list[StoredEvent]", out)  # read alike (see Shipped)


def _next_request(source: BinaryIO) -> Request | None:
    """The next request on ``source`` (blocking; None: the parent closed the pipe)."""
    head = source.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = source.read(length)
    if len(body) < length:
        return None
    return _requests.decode(body)


async def _serve(source: BinaryIO, replies: BinaryIO) -> int:
    from services.projector import Projector

    loop = asyncio.get_running_loop()
    request = await loop.run_in_executor(None, _next_request, source)
    if not isinstance(request, Open):
        return 2
    store = await _open(request)
    try:
        refusals = _Refusals(request.reader)
        projector = Projector(refusals, store, reader=request.reader)  # type: ignore[arg-type]
        projector.position = await store.checkpoint(projector.key)
        replies.write(_frame(Applied(checkpoint=projector.position)))
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
            chunk = _decoded(request.events, refusals)
            try:
                await projector.apply_batch(chunk, through=request.through)
            except Exception as err:
                log.error("rebuild.writer_failed", through=request.through, error=repr(err), exc_info=True)
                replies.write(_frame(Failed(error=repr(err))))
                return 1
            replies.write(_frame(Applied(checkpoint=projector.position, refused=refusals.refused)))
            refusals.refused = []
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
