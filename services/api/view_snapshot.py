"""Snapshots of the API's view (object ``api`` in ``rd_snapshots``), so a restart reads only
the log after the snapshot, not all of it.

A snapshot holds the routing view at a stream sequence and, for each other fold the API runs
(agent tokens, replies waiting for an outcome), either that fold's own dump or what it must be
fed again (a fold whose state holds personal data, which must not sit in clear in a snapshot,
is fed again instead): the subjects it needs, each from a sequence (the open conversations of
the workspace, the conversations with replies waiting), or the sequence to read the log from.
One that cannot be read, or was written by another version, is ignored: the view is then
folded from the whole log (and saved again). As for the router's (``services.state_snapshots``),
a damaged one is counted with the quarantined log messages; one of another version is only
said (every upgrade that changes a format meets one: nothing is wrong with it).
"""

from __future__ import annotations

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from events import subjects
from events.objects import read_object
from events.quarantine import QUARANTINED
from router import snapshot as router_snapshot
from router.state import RouterState
from services.bus.errors import NATS_UNAVAILABLE
from services.state_snapshots import of_another_log

log = structlog.get_logger(__name__)

SNAPSHOT_NAME = "api"
# Bump whenever the layout of the snapshot, or of a fold's dump, changes.
FORMAT = 1


class ViewSnapshot(msgspec.Struct, kw_only=True):
    format: int
    router_format: int  # router.snapshot.FORMAT of the routing view inside
    position: int  # last stream sequence every fold had applied
    state: RouterState
    dumps: dict[str, bytes] = {}  # fold name -> its own dump
    refeed_from: dict[str, int] = {}  # fold name -> first sequence to feed it again from
    # fold name -> subject -> first sequence: only these subjects' events are fed to it again
    refeed_subjects: dict[str, dict[str, int]] = {}


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ViewSnapshot)


class _Formats(msgspec.Struct):
    """Only the formats: read before the rest, whose layout another format may not share."""

    format: int
    router_format: int


_formats_decoder = msgspec.msgpack.Decoder(_Formats)


class UnusableSnapshot(ValueError):
    """Damaged, or written by another version: fold the whole log instead."""


class OtherVersionSnapshot(UnusableSnapshot):
    """Written by another version (another format, or folded without events this one folds):
    fold the whole log instead, but nothing is wrong with it (not counted as quarantined)."""


def dump(snap: ViewSnapshot) -> bytes:
    return _encoder.encode(snap)


def load(data: bytes) -> ViewSnapshot:
    try:
        formats = _formats_decoder.decode(data)
    except msgspec.DecodeError as err:
        raise UnusableSnapshot(f"not an API view snapshot: {err}") from err
    if formats.format != FORMAT or formats.router_format != router_snapshot.FORMAT:
        raise OtherVersionSnapshot(
            f"format {formats.format}/{formats.router_format}, this API reads {FORMAT}/{router_snapshot.FORMAT}"
        )
    try:
        snap = _decoder.decode(data)
    except msgspec.DecodeError as err:
        raise UnusableSnapshot(f"not an API view snapshot: {err}") from err
    try:
        router_snapshot.check_skipped(snap.state)  # its other folds skipped the same events
    except router_snapshot.IncompatibleSnapshot as err:
        raise OtherVersionSnapshot(str(err)) from err
    return snap


async def read(js: JetStreamContext) -> ViewSnapshot | None:
    """The stored snapshot, or None (none yet, or not usable: logged and counted)."""
    try:
        found = await read_object(js, subjects.SNAPSHOT_BUCKET, SNAPSHOT_NAME)
    except (ObjectNotFoundError, NotFoundError):
        return None
    except NATS_UNAVAILABLE:
        raise
    except Exception as err:  # a damaged object (chunks, digest): the log is the truth
        log.warning("api.snapshot_ignored", reason=f"unreadable: {err!r}", action="fold the whole log")
        QUARANTINED.labels(reader="api", stream=subjects.SNAPSHOT_BUCKET).inc()
        return None
    if not found:
        return None
    try:
        snap = load(found)
    except UnusableSnapshot as err:
        log.warning("api.snapshot_ignored", reason=str(err), action="fold the whole log")
        if not isinstance(err, OtherVersionSnapshot):
            QUARANTINED.labels(reader="api", stream=subjects.SNAPSHOT_BUCKET).inc()
        return None
    if other := await of_another_log(js, snap.position):
        log.warning("api.snapshot_ignored", reason=other, action="fold the whole log")
        QUARANTINED.labels(reader="api", stream=subjects.SNAPSHOT_BUCKET).inc()
        return None
    return snap


async def write(js: JetStreamContext, snap: ViewSnapshot) -> int:
    """Store ``snap``; returns its size in bytes."""
    data = dump(snap)
    obs = await js.object_store(subjects.SNAPSHOT_BUCKET)
    await obs.put(SNAPSHOT_NAME, data)
    return len(data)
