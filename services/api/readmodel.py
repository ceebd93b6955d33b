"""The API's live view of routing: the router's own fold of ``rd.evt.>``, kept in memory.

The API never decides; it reads this state to answer queries and to check commands
(is there an offer for this agent?), and appends commands with the conversation's subject
sequence as the expected one, so a stale view gets a conflict, never a wrong write.

It starts from a snapshot of itself (``services.api.view_snapshot``) when there is a usable
one, reads the log after it with a reader that never skips (``services.api.logreader``), and
says whether it has caught up with the log as it stood at start (``caught_up``): the API
listens at once and answers 503 until then (``services.api.readiness``). A live stream follows
what it applies through a ``Listener`` (``services.api.view_listener``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from events import subjects
from events.objects import save_object
from events.skips import count_skip
from events.stopping import cancel_all_and_wait
from events.store import EventStore, StoredEvent, reading_as
from router import snapshot as router_snapshot
from router.fold import evolve
from router.state import RouterState, reading_only
from services.api import view_snapshot
from services.api.logreader import LogReader
from services.api.view_listener import Listener
from services.spacing import Spacing

log = structlog.get_logger(__name__)


Fold = Callable[[StoredEvent], None]

# Save a snapshot of the view after this many newly applied events (and once caught up,
# when the catch-up read at least SNAPSHOT_AFTER_CATCH_UP events).
SNAPSHOT_EVERY = 50_000
SNAPSHOT_AFTER_CATCH_UP = 1_000
# Encoding the view stops the loop that serves requests: at most this share of the time
# (services.spacing), however often SNAPSHOT_EVERY events arrive.
SNAPSHOT_DUTY = 0.01
# Subjects read at once when folds are fed their subjects again after a snapshot.
REFEED_READS_IN_FLIGHT = 32


class SavedFold(Protocol):
    """A fold whose state can go into the view's snapshot (no personal data in clear)."""

    def dump(self) -> bytes: ...

    def load(self, data: bytes) -> None: ...


@dataclass
class _FoldEntry:
    name: str
    apply: Fold
    saved: SavedFold | None
    refeed_from: Callable[[], int] | None
    refeed_subjects: Callable[[], dict[str, int]] | None = None
    needs_the_past: bool = True


class LiveState:
    """The API process's one reader of the log. It folds every event into the routing view
    and hands it to the other folds registered before ``begin`` (the agent-token table, the
    replies waiting) and to the live streams listening, so the process reads the log once,
    however many views and open streams it has."""

    def __init__(
        self,
        store: EventStore,
        *,
        use_snapshot: bool = True,
        snapshot_every: int = SNAPSHOT_EVERY,
        reader: LogReader | None = None,
    ) -> None:
        self.store = reading_as(store, "api")
        self.state = reading_only(RouterState())  # the facts and queues it serves, not decide's indexes
        self.position = 0  # last stream sequence every fold has seen
        self.log_end = 0  # the log's last sequence when this view began
        self.caught_up = asyncio.Event()  # position reached log_end
        self.snapshot_position: int | None = None  # where the snapshot it started from stood
        self.snapshots_saved = 0
        self.use_snapshot = use_snapshot
        self.snapshot_every = snapshot_every
        self.reader = reader or LogReader(self.store)
        self._folds: list[_FoldEntry] = []
        self._refeed: dict[str, int] = {}
        self._refeed_subjects: dict[str, dict[str, int]] = {}  # fold name -> subject -> from seq
        self.fed_again = 0  # events fed again after the snapshot to folds it holds no dump of (per fold)
        self._listeners: set[Listener] = set()
        self._task: asyncio.Task[None] | None = None
        self._saving: asyncio.Task[None] | None = None
        self._since_snapshot = 0
        self._snapshot_spacing = Spacing(SNAPSHOT_DUTY)
        self._began_at = 0.0
        self._advanced = asyncio.Condition()

    def add_fold(
        self,
        fold: Fold,
        *,
        name: str | None = None,
        saved: SavedFold | None = None,
        refeed_from: Callable[[], int] | None = None,
        refeed_subjects: Callable[[], dict[str, int]] | None = None,
        needs_the_past: bool = True,
    ) -> None:
        """``saved``: the fold's state goes into the view's snapshot; ``refeed_subjects``:
        after a snapshot the fold is fed again the events of only these subjects, each from
        its sequence (subject -> first sequence, ids only, as it gave when the snapshot was
        taken): what a fold of personal data about open conversations needs, however old
        the oldest is; ``refeed_from``: fed again the whole log from that sequence (and
        from it when a snapshot has no subjects for it); none: fed the whole log again (the
        routing view still starts from the snapshot). ``needs_the_past=False``: a snapshot
        written before this fold existed (an upgrade) is not a reason to read the whole log
        again for it; it starts after the snapshot."""
        if self._task is not None:
            raise RuntimeError("add folds before LiveState.start(): a late fold would miss the past")
        label = name or str(getattr(fold, "__qualname__", None) or repr(fold))
        self._folds.append(_FoldEntry(label, fold, saved, refeed_from, refeed_subjects, needs_the_past))

    def listen(self, limit: int = 10_000) -> Listener:
        """Events applied from now on (after ``position``), for a reader that follows the log
        without a consumer of its own on the server."""
        listener = Listener(self._listeners, limit)
        self._listeners.add(listener)
        return listener

    async def start(self) -> None:
        """Catch up with the log as it stands, then follow it: once this returns, answers
        and token checks reflect everything written before the API started."""
        await self.begin()
        await self.caught_up.wait()

    async def begin(self) -> None:
        """Load the snapshot (if any) and start reading the log in the background; returns
        at once. ``caught_up`` is set when the view includes the log as it stood now."""
        self._began_at = time.monotonic()
        if self.use_snapshot:
            snap = await view_snapshot.read(self.store.js)
            if snap is not None:
                self._restore(snap)
        self.log_end = await self.store.last_seq()
        log.info("api.view_starting", from_seq=self.position, log_end=self.log_end, snapshot=self.snapshot_position)
        self._task = asyncio.create_task(self._run(), name="api-live-state")

    def _restore(self, snap: view_snapshot.ViewSnapshot) -> None:
        for fold in self._folds:
            if fold.saved is not None and fold.name in snap.dumps:
                fold.saved.load(snap.dumps[fold.name])
            elif fold.refeed_subjects is not None and fold.name in snap.refeed_subjects:
                self._refeed_subjects[fold.name] = snap.refeed_subjects[fold.name]
            else:
                # fed again from where its snapshot says, or from the start (or, for a fold that
                # needs no past, from after a snapshot that never heard of it; told so if it asks)
                unknown = 1 if fold.needs_the_past else snap.position + 1
                if not fold.needs_the_past and fold.name not in snap.refeed_from:
                    missed = getattr(fold.saved, "missed_the_past", None)
                    if missed is not None:
                        missed()
                self._refeed[fold.name] = min(max(1, snap.refeed_from.get(fold.name, unknown)), snap.position + 1)
        self._refeed = {name: seq for name, seq in self._refeed.items() if seq <= snap.position}
        self.state = reading_only(snap.state)
        self.position = snap.position
        self.snapshot_position = snap.position
        log.info(
            "api.snapshot_loaded",
            seq=snap.position,
            conversations=len(snap.state.conversations),
            refeed=self._refeed,
            refeed_subjects={name: len(subjects) for name, subjects in self._refeed_subjects.items()},
        )

    async def stop(self) -> None:
        await cancel_all_and_wait(t for t in (self._task, self._saving) if t is not None)

    def progress(self) -> dict[str, Any]:
        """For /readyz and 503 answers: where the view stands."""
        return {
            "caught_up": self.caught_up.is_set(),
            "position": self.position,
            "log_end_at_start": self.log_end,
            "snapshot_seq": self.snapshot_position,
            "rereads": self.reader.rereads,
        }

    def _apply(self, batch: list[StoredEvent]) -> None:
        for stored in batch:
            # Each fold on its own: an event one of them cannot apply is quarantined (once) and
            # skipped by that fold; the others, and everything after it, still count.
            try:
                self.state = evolve(self.state, stored.seq, stored.subject, stored.event)
            except Exception as err:
                self.store.cannot_apply(stored, err)
                self.state.last_seq = max(self.state.last_seq, stored.seq)
            for fold in self._folds:
                self._apply_one(fold, stored)
            self.position = max(self.position, stored.seq)
            for listener in self._listeners:
                listener.offer(stored)
        self._since_snapshot += len(batch)

    def _apply_one(self, fold: _FoldEntry, stored: StoredEvent) -> None:
        try:
            fold.apply(stored)
        except Exception as err:
            self.store.cannot_apply(stored, err)

    async def _run(self) -> None:
        while True:
            try:
                if self._refeed_subjects:
                    await self._feed_subjects_again()
                if self._refeed:
                    await self._feed_again()
                if not self.caught_up.is_set() and self.position >= self.log_end:
                    self._now_caught_up()
                async for batch in self.reader.batches(self.position):
                    if batch:
                        self._apply(batch)
                        async with self._advanced:
                            self._advanced.notify_all()
                    if not self.caught_up.is_set() and self.position >= self.log_end:
                        self._now_caught_up()
                    elif (
                        self.caught_up.is_set()
                        and self._since_snapshot >= self.snapshot_every
                        and self._snapshot_spacing.due()
                    ):
                        self._save_soon()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # NATS away, a consumer refused: read again from where we are
                log.error("api.view_read_failed", position=self.position, error=repr(err), action="read again")
                count_skip("api.view_read")
                await asyncio.sleep(1.0)

    async def _feed_subjects_again(self) -> None:
        """After a snapshot: the folds it named subjects for see those subjects' events again,
        up to it. Each subject is read once for every fold that wants it (from the earliest
        sequence any asks for), many at once, each with batched direct gets."""
        until = self.snapshot_position or 0
        wanted = self._refeed_subjects
        earliest: dict[str, int] = {}
        for subjects_from in wanted.values():
            for subject, seq in subjects_from.items():
                earliest[subject] = min(earliest.get(subject, seq), seq)
        limit = asyncio.Semaphore(REFEED_READS_IN_FLIGHT)

        async def read(subject: str, from_seq: int) -> list[StoredEvent]:
            async with limit:
                return [s for s in await self.store.read_direct(subject, from_seq) if s.seq <= until]

        found = await asyncio.gather(*(read(subject, seq) for subject, seq in earliest.items()))
        folds = [(fold, wanted[fold.name]) for fold in self._folds if fold.name in wanted]
        fed = 0
        for stored in sorted((stored for each in found for stored in each), key=lambda stored: stored.seq):
            for fold, subjects_from in folds:
                start = subjects_from.get(stored.subject)
                if start is not None and stored.seq >= start:
                    self._apply_one(fold, stored)
                    fed += 1
        self.fed_again += fed
        log.info(
            "api.folds_fed_again",
            folds=sorted(wanted),
            subjects=len(earliest),
            events=sum(len(each) for each in found),
            fed=fed,
            until=until,
        )
        self._refeed_subjects = {}

    async def _feed_again(self) -> None:
        """After a snapshot: the folds it holds no dump for see the log again, up to it."""
        start = min(self._refeed.values())
        until = self.snapshot_position or 0
        refeed = LogReader(self.store, batch=self.reader.batch, wait=self.reader.wait)
        async with contextlib.aclosing(refeed.batches(start - 1, until=until)) as batches:
            async for batch in batches:
                for stored in batch:
                    for fold in self._folds:
                        if fold.name in self._refeed and stored.seq >= self._refeed[fold.name]:
                            self._apply_one(fold, stored)
                            self.fed_again += 1
        log.info("api.folds_fed_again", folds=sorted(self._refeed), from_seq=start, until=until)
        self._refeed = {}

    def _now_caught_up(self) -> None:
        self.caught_up.set()
        log.info(
            "api.view_caught_up",
            position=self.position,
            snapshot=self.snapshot_position,
            read=self.reader.read,
            rereads=self.reader.rereads,
            seconds=round(time.monotonic() - self._began_at, 2),
        )
        if self.use_snapshot and self._since_snapshot >= SNAPSHOT_AFTER_CATCH_UP:
            self._save_soon()

    def _save_soon(self) -> None:
        """Encode the view now (it changes as events arrive) and store it in the background."""
        if self._saving is not None and not self._saving.done():
            return
        with self._snapshot_spacing.run():
            snap = view_snapshot.ViewSnapshot(
                format=view_snapshot.FORMAT,
                router_format=router_snapshot.FORMAT,
                position=self.position,
                state=self.state,
                dumps={f.name: f.saved.dump() for f in self._folds if f.saved is not None},
                refeed_from={
                    f.name: f.refeed_from() for f in self._folds if f.saved is None and f.refeed_from is not None
                },
                refeed_subjects={
                    f.name: f.refeed_subjects()
                    for f in self._folds
                    if f.saved is None and f.refeed_subjects is not None
                },
            )
            data = view_snapshot.dump(snap)
        self._since_snapshot = 0
        self._saving = asyncio.create_task(self._store(data, snap.position), name="api-view-snapshot")

    async def save_snapshot(self) -> None:
        """Save a snapshot now and wait for it (tools and tests)."""
        if self._saving is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._saving
        self._saving = None
        self._save_soon()
        assert self._saving is not None
        await self._saving

    async def _store(self, data: bytes, position: int) -> None:
        if not await save_object(
            self.store.js,
            subjects.SNAPSHOT_BUCKET,
            view_snapshot.SNAPSHOT_NAME,
            data,
            skip_as="api.snapshot_save",
            seq=position,
        ):
            return
        self.snapshots_saved += 1
        log.info("api.snapshot_saved", seq=position, size=len(data))

    async def wait_for(self, seq: int, timeout: float = 5.0) -> bool:
        """Until every view includes ``seq`` (read-your-writes after an append)."""

        async def reached() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self.position >= seq)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            return False
        return True
