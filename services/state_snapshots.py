"""Reading a routing state saved as an object in ``rd_snapshots`` (``router.snapshot``'s format).

The router saves its state as ``router``, the delivery service its own (facts only) as
``delivery``. A snapshot that is missing, damaged or written by another version is not an
error: the caller folds the whole log instead. A damaged one is counted with the quarantined
log messages (stream label: the snapshot bucket); one of another version is only said.
"""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from events import subjects
from events.objects import read_object
from events.quarantine import QUARANTINED
from router import snapshot
from router.state import RouterState
from services.bus.errors import NATS_UNAVAILABLE

log = structlog.get_logger(__name__)


async def read_state(js: JetStreamContext, name: str, *, reader: str) -> RouterState | None:
    """The state saved as ``name``, or None (none saved, or not usable: logged as
    ``<reader>.snapshot_ignored``). Raises what NATS raises when it does not answer."""
    try:
        data = await read_object(js, subjects.SNAPSHOT_BUCKET, name)
    except (ObjectNotFoundError, NotFoundError):
        return None
    except NATS_UNAVAILABLE:
        raise
    except Exception as err:  # a damaged object (chunks, digest): the log is the truth
        _ignored(reader, name, f"unreadable: {err!r}")
        return None
    if not data:
        return None
    try:
        state = snapshot.load(data)
    except snapshot.UnreadableSnapshot as err:
        _ignored(reader, name, str(err))
    except snapshot.IncompatibleSnapshot as err:
        # Written by another version: the log is the truth, so fold it all again (not counted:
        # nothing is wrong with it).
        _said(reader, name, str(err))
    except Exception as err:  # not a snapshot we can use, whatever is wrong with it
        _ignored(reader, name, f"cannot load: {err!r}")
    else:
        if not (other := await of_another_log(js, state.last_seq)):
            return state
        _ignored(reader, name, other)
    return None


async def of_another_log(js: JetStreamContext, folded: int) -> str:
    """Why a snapshot that folded the log up to ``folded`` is of another log ("" when it is not).
    Past the log's end it is (snapshots restored from a newer backup than the log): resumed after
    it, every event up to that sequence would be skipped."""
    end = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    return f"of another log: it folded events up to {folded}, the log ends at {end}" if folded > end else ""


def _said(reader: str, name: str, reason: str) -> None:
    log.warning(
        f"{reader}.snapshot_ignored",
        bucket=subjects.SNAPSHOT_BUCKET,
        object=name,
        reason=reason,
        action="replay the whole log",
    )


def _ignored(reader: str, name: str, reason: str) -> None:
    _said(reader, name, reason)
    QUARANTINED.labels(reader=reader, stream=subjects.SNAPSHOT_BUCKET).inc()
