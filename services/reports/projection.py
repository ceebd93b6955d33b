"""The metrics projection kept up to date from the event log, and report parameters.

``ReportProjection`` holds the fold's state in memory and, before each report, folds what
the log gained since (``EventStore.replay`` from where it stopped). The API starts folding
the whole of ``rd.evt.c.>`` when it starts, so the figures are always the fold of the log as
it stands: rebuilt by construction, identical for the same log.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo

import msgspec
import nats.errors
import structlog

from events import subjects
from events.objects import read_object, save_object
from events.store import EventStore, reading_as
from services.reports.fold import REPORT_FOLD_VERSION, ReportState, evolve
from services.reports.metrics import DEFAULT_REOPEN_HOURS, GROUP_BYS, ReportQuery, zone
from services.spacing import Spacing

log = structlog.get_logger("relaydesk.reports")

DEFAULT_DAYS = 7
MAX_REOPEN_HOURS = 24 * 90
MAX_TZ_NAME = 64  # the longest IANA name is ~32 characters; more is not a zone
SNAPSHOT_NAME = "reports"
SNAPSHOT_EVERY = 50_000
# Encoding stops the API's loop: at most this share of the time (services.spacing).
SNAPSHOT_DUTY = 0.01
"""Save a snapshot of the fold (object ``reports`` in ``rd_snapshots``) after this many newly
folded events, so a restarted API folds only the log after it. 0: never."""


class ReportSnapshot(msgspec.Struct, kw_only=True):
    version: int
    through: int
    state: ReportState


def dump_snapshot(state: ReportState, through: int) -> bytes:
    """msgpack, zlib-compressed (ids repeat a lot: about 110 bytes per conversation)."""
    raw = msgspec.msgpack.encode(ReportSnapshot(version=REPORT_FOLD_VERSION, through=through, state=state))
    return zlib.compress(raw, 1)


def load_snapshot(data: bytes) -> ReportSnapshot | None:
    """The snapshot, or None if it was written by another fold version (or is unreadable)."""
    try:
        snap = msgspec.msgpack.decode(zlib.decompress(data), type=ReportSnapshot)
    except (zlib.error, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return snap if snap.version == REPORT_FOLD_VERSION and snap.state.fold_version == REPORT_FOLD_VERSION else None


class ReportProjection:
    """The metrics fold of the log, in memory. One catch-up runs at a time (a task that
    outlives the request that started it: a client giving up does not waste the work)."""

    def __init__(
        self, store: EventStore, *, batch: int = 1000, snapshot_every: int | None = None, read_snapshot: bool = True
    ) -> None:
        self.store = reading_as(store, "reports")
        self.batch = batch
        self.snapshot_every = SNAPSHOT_EVERY if snapshot_every is None else snapshot_every
        self.state = ReportState()
        self.through = 0  # the log is folded up to here (customer events or not)
        self.target = 0  # the end of the log the running catch-up is folding towards
        self.snapshot_loaded = False
        self._looked_for_snapshot = not read_snapshot
        self._since_snapshot = 0
        self._snapshot_spacing = Spacing(SNAPSHOT_DUTY)
        self._task: asyncio.Task[int] | None = None
        self._saving: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[int]:
        """The running catch-up, or a new one (needs a running event loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._catch_up(), name="reports-catch-up")
            self._task.add_done_callback(_log_failure)
        return self._task

    async def catch_up(self) -> int:
        """Fold everything appended to the log before this call; returns the last folded
        sequence. Joins a running catch-up, then (if that one began before this call) folds
        whatever it did not see."""
        running = self._task
        if running is not None and not running.done():
            await asyncio.shield(running)
        return await asyncio.shield(self.start())

    async def _catch_up(self) -> int:
        try:
            return await self._fold_new()
        except asyncio.CancelledError:
            # The process stopping (asyncio.run cancels what is left): folded so far is kept.
            log.info("reports.catch_up_stopped", reason="cancelled", folded_seq=self.state.last_seq, target=self.target)
            raise

    async def _fold_new(self) -> int:
        if not self._looked_for_snapshot:
            await self._load_snapshot()
        end = await self.store.last_seq()
        if self.snapshot_loaded and self.through > end:  # a snapshot of another (older, longer) log
            log.warning("reports.snapshot_ignored", reason="beyond the end of the log", through=self.through, end=end)
            self.state, self.through, self.snapshot_loaded = ReportState(), 0, False
        if end <= self.through:
            return self.state.last_seq  # nothing new (the common case: one stream-info request)
        self.target = end
        before = self.state.last_seq
        async for chunk in self.store.replay(subjects.CUSTOMER_EVENTS_ALL, self.through + 1, batch=self.batch):
            for stored in chunk:
                try:
                    evolve(self.state, stored)
                except Exception as err:  # quarantined (logged once, counted, parked) and skipped
                    self.store.cannot_apply(stored, err)
                    self.state.last_seq = max(self.state.last_seq, stored.seq)
        # Everything up to ``end`` is folded (agent events are not ours, but behind us too). A
        # replay that fails half way leaves ``through`` alone: the next one skips what was folded.
        self.through = max(end, self.state.last_seq)
        if self.state.last_seq != before:
            log.info("reports.caught_up", from_seq=before + 1, to_seq=self.state.last_seq)
        self._since_snapshot += self.state.last_seq - before
        if (
            0 < self.snapshot_every <= self._since_snapshot
            and (self._saving is None or self._saving.done())
            and self._snapshot_spacing.due()
        ):
            # Encoded now (synchronously: a consistent state), stored in the background.
            with self._snapshot_spacing.run():
                data = dump_snapshot(self.state, self.through)
            self._since_snapshot = 0
            self._saving = asyncio.create_task(self._save_snapshot(data, self.through), name="reports-snapshot")
        return self.state.last_seq

    async def _load_snapshot(self) -> None:
        self._looked_for_snapshot = True
        try:
            found = await read_object(self.store.js, subjects.SNAPSHOT_BUCKET, SNAPSHOT_NAME)
        except Exception as err:  # no object store, or a snapshot that never arrived: fold from the start
            log.warning("reports.snapshot_unread", reason=repr(err), action="fold the whole log")
            return
        if found is None:
            return
        snap = load_snapshot(found)
        if snap is None:
            log.warning("reports.snapshot_ignored", reason="another fold version or unreadable")
            return
        self.state, self.through, self.snapshot_loaded = snap.state, snap.through, True
        log.info("reports.snapshot_loaded", through=snap.through, conversations=len(snap.state.conversations))

    async def _save_snapshot(self, data: bytes, through: int) -> None:
        if not await save_object(
            self.store.js, subjects.SNAPSHOT_BUCKET, SNAPSHOT_NAME, data, skip_as="reports.snapshot_save", seq=through
        ):
            return
        log.info("reports.snapshot_saved", through=through, size=len(data))


def _log_failure(task: asyncio.Task[int]) -> None:
    if task.cancelled() or (err := task.exception()) is None:
        return
    if isinstance(err, nats.errors.ConnectionClosedError):
        # Its connection closed under it: the process is stopping (a report asked after that
        # starts a new catch-up, and fails as a report would without NATS).
        log.info("reports.catch_up_stopped", reason="connection closed")
    else:
        log.warning("reports.catch_up_failed", error=repr(err))


class BadQuery(ValueError):
    """A report parameter that cannot be used; the message says which and why."""


def parse_instant(name: str, raw: str, *, end: bool, tz: tzinfo = UTC) -> datetime:
    """An ISO date in any form ``date.fromisoformat`` reads (``2026-11-23``, ``20261123``,
    ``2026-W48-1``: a whole day in ``tz``, the start of it, or for ``to`` the end of it) or an
    ISO date-time (``2026-11-23T08:00:00Z``; without an offset, in ``tz``). Returned in UTC."""
    text = raw.strip()
    try:
        try:
            day = date.fromisoformat(text)  # a date and nothing else (a time part is refused)
        except ValueError:
            day = None  # a date-time, or nothing that parses (said below)
        if day is not None:
            # The local midnight, so a day across a change of daylight saving time is 23 or 25 hours.
            return datetime.combine(day + timedelta(days=1) if end else day, time(0), tzinfo=tz).astimezone(UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is None:
            return _on_the_clock(name, raw, parsed, tz)
        return parsed.astimezone(UTC)
    except BadQuery:
        raise
    except OverflowError as err:  # 9999-12-31 as a whole day ends past the last date there is
        raise BadQuery(f"{name} {raw!r} is out of range") from err
    except ValueError as err:
        raise BadQuery(
            f"{name} must be an ISO date (2026-11-23) or date-time (2026-11-23T08:00:00Z), not {raw!r}"
        ) from err


def _on_the_clock(name: str, raw: str, local: datetime, tz: tzinfo) -> datetime:
    """A time without an offset, on ``tz``'s clock. One the clock skipped (spring forward) or
    showed twice (fall back) is refused naming the offsets to choose from: read as its first
    occurrence, ``from=2026-03-29T02:30&to=2026-03-29T03:30`` in Europe/Berlin were the same
    instant, refused as "from (01:30+00:00) must be before to (01:30+00:00)"."""
    first, second = local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first.astimezone(UTC)
    offsets = f"{_offset(first)} or {_offset(second)}"
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None, fold=0) != local:
        raise BadQuery(
            f"{name} {raw!r} is no time on the clock in {tz} (skipped when daylight saving time began): "
            f"give an offset ({offsets}) or another time"
        )
    raise BadQuery(
        f"{name} {raw!r} is shown twice on the clock in {tz} (daylight saving time ended): give its offset, {offsets}"
    )


def _local(moment: datetime, tz: tzinfo) -> str:
    try:
        return moment.astimezone(tz).isoformat()
    except OverflowError:
        return moment.isoformat()


def _offset(moment: datetime) -> str:
    return moment.isoformat(timespec="minutes")[-6:]


def _default_start(end: datetime, tz: tzinfo) -> datetime:
    """``DEFAULT_DAYS`` before ``end`` on ``tz``'s clock, so a plain ``to`` gives whole days:
    7 times 24 hours before ``to=2026-10-31`` in Europe/Berlin was 01:00 on the 25th (the day
    clocks went back has 25 hours), the first day's report short of its first hour."""
    local = end.astimezone(tz)
    # Aware arithmetic on one tzinfo is wall-clock arithmetic; the offset is recomputed after.
    earlier = (local - timedelta(days=DEFAULT_DAYS)).replace(fold=local.fold)
    return earlier.astimezone(UTC)


def parse_query(params: Mapping[str, str], now: datetime) -> ReportQuery:
    """``from`` (inclusive), ``to`` (exclusive; a plain date includes that day), ``group_by``,
    ``reopen_hours``, ``tz`` (an IANA time zone: the report's days and hours, and the plain
    dates and offset-less times it is given). Defaults: the last 7 days up to now, no grouping,
    24 hours, UTC."""
    # limit and cursor (a page of the groups) are read by the API (services.api.paging).
    unknown = sorted(set(params) - {"from", "to", "group_by", "reopen_hours", "tz", "limit", "cursor"})
    if unknown:
        raise BadQuery(
            f"unknown parameter(s) {', '.join(unknown)}; use from, to, group_by, reopen_hours, tz, limit, cursor"
        )
    tz_name = (params.get("tz") or "").strip() or "UTC"
    try:
        if len(tz_name) > MAX_TZ_NAME:
            raise ValueError("too long for a time zone name")
        tz = zone(tz_name)
    except ValueError as err:
        shown = tz_name[:MAX_TZ_NAME] + ("…" if len(tz_name) > MAX_TZ_NAME else "")
        raise BadQuery(f"tz must be an IANA time zone such as Europe/Paris or America/New_York, not {shown!r}") from err
    end = parse_instant("to", params["to"], end=True, tz=tz) if params.get("to") else now
    if params.get("from"):
        start = parse_instant("from", params["from"], end=False, tz=tz)
    else:
        try:
            start = _default_start(end, tz)
        except OverflowError as err:  # a `to` in year 1 has no week before it
            raise BadQuery(f"to {params['to']!r} is out of range: give from as well") from err
    if start >= end:
        # Quoted as given: from=2026-11-23&to=2026-11-22 said "from (2026-11-23T00:00:00+00:00)
        # must be before to (2026-11-23T00:00:00+00:00)", the plain to read as its day's end.
        given = f"from {params['from']!r}" if params.get("from") else f"from (7 days before to, {start.isoformat()})"
        until = f"to {params['to']!r}" if params.get("to") else f"to (now, {end.isoformat()})"
        raise BadQuery(
            f"{given} must be before {until}: the window is {_local(start, tz)} to {_local(end, tz)} "
            f"in {tz_name} (to is exclusive; a plain date as to includes that day)"
        )
    try:  # the report gives both bounds in tz: the first and last days there are have no room for an offset
        start.astimezone(tz), end.astimezone(tz)
    except OverflowError as err:
        raise BadQuery(f"from and to must be within the years 1 to 9999 in {tz_name}") from err
    group_by = params.get("group_by") or None
    if group_by is not None and group_by not in GROUP_BYS:
        raise BadQuery(f"group_by must be one of {', '.join(GROUP_BYS)}, not {group_by!r}")
    reopen_hours = DEFAULT_REOPEN_HOURS
    if params.get("reopen_hours"):
        try:
            reopen_hours = float(params["reopen_hours"])
        except ValueError as err:
            raise BadQuery("reopen_hours must be a number of hours") from err
        if not 0 <= reopen_hours <= MAX_REOPEN_HOURS:
            raise BadQuery(f"reopen_hours goes from 0 to {MAX_REOPEN_HOURS}")
    return ReportQuery(start=start, end=end, group_by=group_by, reopen_hours=reopen_hours, tz=tz_name)
