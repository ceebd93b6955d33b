"""The routing state ``relaydesk status`` shows (agents online, queue depths), bounded.

The newest snapshot of the routing state (the router's or the API's, read as the router reads
them: one it would ignore is ignored, and said), plus at most ``FOLD_LIMIT`` events of the log
after it. Found by a scale audit: with no router snapshot ``status`` folded the whole log, 62 s
and 725 MB over 1.5 million events, in an incident when an operator needs the answer at once.
With no snapshot and a log longer than that, agents and queues are not folded and the note says
why; with a snapshot further behind, they are shown as of where the fold stopped, said.
``--fold-all`` folds whatever it takes, with a progress line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError, ObjectNotFoundError

from events import subjects
from events.objects import read_object
from events.replay import replay_batches
from events.skips import count_skip
from events.store import EventStore
from router.fold import evolve
from router.queues import queue_summaries
from router.state import RouterState
from services.bus.errors import NATS_UNAVAILABLE
from services.config import Config
from services.progress import ShowProgress, showing_progress
from services.state_snapshots import of_another_log, read_state

log = structlog.get_logger(__name__)

FOLD_LIMIT = 100_000
"""Events of the log ``status`` folds after the newest snapshot at most (a few seconds)."""


@dataclass
class Routing:
    """The routing state as far as ``status`` folded it, and from what."""

    state: RouterState | None  # None: not folded (no snapshot, and a log too long to fold)
    source: str  # "router snapshot", "api snapshot" or "log" (no snapshot)
    snapshot_seq: int  # the snapshot's last folded sequence (0: none)
    log_seq: int  # the end of the log when status looked
    note: str = ""  # what an operator should know about these figures ("" when complete)

    @property
    def complete(self) -> bool:
        return self.state is not None and self.state.last_seq >= self.log_seq


async def _api_view_state(js: Any) -> RouterState | None:
    """The routing view in the API's snapshot (``services.api.view_snapshot``), or None."""
    from services.api import view_snapshot  # the API's modules: only on this path

    try:
        data = await read_object(js, subjects.SNAPSHOT_BUCKET, view_snapshot.SNAPSHOT_NAME)
    except (ObjectNotFoundError, NotFoundError):
        return None
    except NATS_UNAVAILABLE:
        raise
    except Exception as err:  # a damaged object: the router's snapshot or the log instead
        log.warning("status.snapshot_ignored", snapshot="api", reason=f"unreadable: {err!r}")
        count_skip("status.api_snapshot")
        return None
    if not data:
        return None
    try:
        snap = view_snapshot.load(data)
    except view_snapshot.UnusableSnapshot as err:
        log.warning("status.snapshot_ignored", snapshot="api", reason=str(err))
        return None
    if other := await of_another_log(js, snap.state.last_seq):
        log.warning("status.snapshot_ignored", snapshot="api", reason=other)
        return None
    return snap.state


async def routing_state(nc: NATS, *, limit: int | None = None, progress: ShowProgress = False) -> Routing:
    """The router's state: the newest snapshot of it (the router's or the API's), then the log
    after it, at most ``limit`` events (default ``FOLD_LIMIT``; None from ``fold_all``)."""
    js = nc.jetstream()
    from services.router_runner import SNAPSHOT_NAME  # the service stack: only on this path

    limit = FOLD_LIMIT if limit is None else limit
    end = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    # Read as the router reads it: one it would ignore, we ignore too, and say so.
    found = [
        (state, source)
        for state, source in (
            (await read_state(js, SNAPSHOT_NAME, reader="status"), "router snapshot"),
            (await _api_view_state(js), "api snapshot"),
        )
        if state is not None
    ]
    state, source = max(found, key=lambda f: f[0].last_seq) if found else (RouterState(), "log")
    snapshot_seq = state.last_seq
    behind = end - snapshot_seq
    if not found and behind > limit:
        note = (
            f"no snapshot of the routing state (neither the router's nor the API's in {subjects.SNAPSHOT_BUCKET})"
            f" and the log holds {end:,} events: agents and queues not folded (status folds at most {limit:,});"
            " the router saves one every [runner] snapshot_every events while it leads;"
            " relaydesk status --fold-all folds the whole log"
        )
        return Routing(None, source, 0, end, note)
    stop = min(end, snapshot_seq + limit)
    store = EventStore(nc, js, reader="status", timeout=30.0)
    async with showing_progress(
        progress, "status: folding the log", (stop - snapshot_seq) or None, event="status.progress"
    ) as shown:
        async for batch in replay_batches(store, subjects.EVENTS_ALL, snapshot_seq + 1, end=stop):
            for stored in batch:
                if stored.seq > stop:
                    break
                try:
                    state = evolve(state, stored.seq, stored.subject, stored.event)
                except Exception as err:  # the router quarantines these; status only counts them
                    log.warning("status.event_skipped", seq=stored.seq, subject=stored.subject, error=repr(err))
                    count_skip("status.fold")
                    state.last_seq = max(state.last_seq, stored.seq)
            shown.update(state.last_seq - snapshot_seq)
        shown.done(stop - snapshot_seq)
    state.last_seq = max(state.last_seq, stop)  # agent-less gaps and events past stop alike
    note = ""
    if stop < end:
        note = (
            f"as of event {stop:,}: the newest snapshot ({source}, event {snapshot_seq:,}) is {behind:,} events"
            f" behind the log, status folds at most {limit:,} after it (is the router leading and saving"
            " snapshots?); relaydesk status --fold-all folds the rest"
        )
    return Routing(state, source, snapshot_seq, end, note)


def routing_summary(routing: Routing, config: Config, now: datetime) -> dict[str, Any]:
    about = {
        "source": routing.source,
        "snapshot_seq": routing.snapshot_seq,
        "log_seq": routing.log_seq,
        "complete": routing.complete,
        "note": routing.note or None,
    }
    state = routing.state
    if state is None:
        return {
            "folded_to_seq": None,
            "agents": None,
            "agents_online": None,
            "queues": None,
            "total_waiting": None,
            **about,
        }
    agents = Counter(agent.status for agent in state.agents.values())
    queues = msgspec.to_builtins(queue_summaries(state, now.timestamp(), config.router))
    return {
        "folded_to_seq": state.last_seq,
        "agents": dict(sorted(agents.items())),
        "agents_online": sum(n for status, n in agents.items() if status != "offline"),
        "queues": queues,
        "total_waiting": sum(q["waiting"] for q in queues),
        **about,
    }
