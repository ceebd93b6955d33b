"""Readiness checks: one per service in the process, each an async callable answering
``CheckResult(ok, detail)``. ``Health`` holds them for the process's health server.

A check never raises and never waits long: NATS calls carry a deadline, and a check that
fails or times out answers not ready with the reason (``Health.run``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client as NATS

from events import subjects
from events.store import EventStore
from events.streams import streams_exist
from services.intake.lag import DURABLE as INTAKE_DURABLE
from services.metrics import PROJECTOR_LAG, PROJECTOR_STALLED

log = structlog.get_logger(__name__)

# How long one check may take; NATS away makes requests wait for their own timeout.
CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


Check = Callable[[], Awaitable[CheckResult]]


async def _starting() -> CheckResult:
    return CheckResult(False, {"reason": "starting"})


class Health:
    """The checks of one process. ``expect(name)`` reserves a failing "starting" check until
    the service ``add``s its own, so ``/readyz`` is not ready before every service runs."""

    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}
        self.port = 0  # where the server listens (0: none)

    def expect(self, name: str) -> None:
        self.checks.setdefault(name, _starting)

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def remove(self, name: str) -> None:
        self.checks.pop(name, None)

    async def run(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Every check at once; (all passed, name -> {"ok", detail...})."""
        names = list(self.checks)
        results = await asyncio.gather(*(self._one(name, self.checks[name]) for name in names))
        detail = {name: {"ok": r.ok, **r.detail} for name, r in zip(names, results, strict=True)}
        return bool(names) and all(r.ok for r in results), detail

    @staticmethod
    async def _one(name: str, check: Check) -> CheckResult:
        try:
            return await asyncio.wait_for(check(), CHECK_SECONDS)
        except TimeoutError:
            return CheckResult(False, {"reason": f"check did not answer within {CHECK_SECONDS}s"})
        except Exception as err:  # a check's own failure is "not ready", never a 500
            log.warning("health.check_failed", check=name, error=repr(err))
            return CheckResult(False, {"reason": repr(err)[:200]})


async def nats_detail(nc: NATS, *, streams: bool = True) -> tuple[bool, dict[str, Any]]:
    """NATS connected, and (``streams``) the Relaydesk streams present."""
    connected = bool(nc.is_connected)
    detail: dict[str, Any] = {"nats_connected": connected}
    ok = connected
    if streams:
        present = connected and await streams_exist(nc.jetstream())
        detail["streams"] = present
        ok = ok and present
    if not ok:
        detail["reason"] = "NATS unavailable" if not connected else "streams missing"
    return ok, detail


def service_check(
    nc: NATS,
    detail: Callable[[], dict[str, Any]],
    *,
    streams: bool = True,
    ready: Callable[[], str | None] | None = None,
) -> Check:
    """Ready when NATS (and the streams) are there and ``ready`` (if given) names no reason
    not to be; ``detail`` adds what the service says of itself. Router and delivery say
    ``role``: leader or standby, both ready (a standby is a healthy process that takes over
    when the lease lapses)."""

    async def check() -> CheckResult:
        ok, nats = await nats_detail(nc, streams=streams)
        out = {**detail(), **nats}
        reason = ready() if ready is not None else None
        if ok and reason:
            ok, out["reason"] = False, reason
        return CheckResult(ok, out)

    return check


# How long every message intake takes may fail to be recorded before it says not ready.
INTAKE_FAILING_S = 30.0


def intake_check(nc: NATS, failing: Callable[[], tuple[float | None, str]] | None = None) -> Check:
    """Intake: NATS, the streams, and its durable consumer present; and (``failing``: since
    when every message taken failed, and why) not failing to record anything for
    ``INTAKE_FAILING_S`` (found by an audit: a stream refusing every append, intake ready)."""

    async def check() -> CheckResult:
        ok, detail = await nats_detail(nc)
        since, why = failing() if failing is not None else (None, "")
        if ok and since is not None and time.monotonic() - since >= INTAKE_FAILING_S:
            seconds = round(time.monotonic() - since)
            return CheckResult(False, {**detail, "reason": f"no message recorded for {seconds} s, each failing: {why}"})
        if ok:
            try:
                info = await nc.jetstream().consumer_info(
                    subjects.INBOUND_STREAM, INTAKE_DURABLE, timeout=CHECK_SECONDS
                )
            except Exception as err:  # not found, or NATS gone since: not ready, said why
                return CheckResult(False, {**detail, "consumer": False, "reason": f"consumer: {err!r}"[:200]})
            detail["consumer"] = True
            detail["pending"] = int(info.num_pending or 0)
        return CheckResult(ok, detail)

    return check


# The projector's default [projection] stale_seconds (services.config).
PROJECTOR_STALE_S = 120.0


class Stall:
    """How long a reader has had events waiting without its position moving, as its health
    checks see it: each check notes (position, lag); the time counts from the first check that
    saw it behind at that position, and starts again when it moves or has nothing to wait for.
    A lag in events alone says nothing of time: at low traffic a stalled projector showed a
    small, steady lag and stayed ready (the observability audit)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._at: int | None = None  # the position it was last seen behind at
        self._since = 0.0  # when it was first seen behind there

    def behind_for(self, position: int, lag: int) -> float:
        now = self.clock()
        if lag <= 0:
            self._at = None
            return 0.0
        if self._at != position:
            self._at, self._since = position, now
        return now - self._since

    def reset(self) -> None:
        self._at = None


def projector_check(
    store: EventStore,
    position: Callable[[], int],
    key: str,
    filter_subject: str,
    *,
    stale_after: float = PROJECTOR_STALE_S,
    rebuilding: Callable[[], bool] = lambda: False,
    erasures_undone: Callable[[], int] = lambda: 0,
    last_error: Callable[[], str | None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> Check:
    """Projector: ready when NATS and the streams are there and it is not stalled: events wait
    for it (lag > 0) and its position has not moved for ``stale_after`` seconds (``[projection]
    stale_seconds``). Its lag (the last event on its subjects minus its position) and how long
    it has been stalled are in the detail and the ``relaydesk_projector_lag_events`` and
    ``relaydesk_projector_stalled_seconds`` gauges. A rebuild of the store (``rebuilding``: the
    old rows serve meanwhile, the position moves at the swap) is no stall. Erasures a restore of
    NATS undid (``erasures_undone``, ``services.erasures_undone``) are named in the detail with
    what to run; they leave it ready (it folds the log as it is). While it retries (its store or
    the log refusing), ``last_error`` says why in the detail at once; readiness still waits
    ``stale_after`` (a database restart of a few seconds is no outage)."""
    stall = Stall(clock)

    async def check() -> CheckResult:
        ok, detail = await nats_detail(store.nc)
        if ok:
            end = await store.last_subject_seq(filter_subject)
            at = position()
            lag = max(0, end - at)
            if rebuilding():
                stall.reset()
                stalled, detail["rebuilding"] = 0.0, True
            else:
                stalled = stall.behind_for(at, lag)
            PROJECTOR_LAG.labels(projector=key).set(lag)
            PROJECTOR_STALLED.labels(projector=key).set(round(stalled, 3))
            detail.update(position=at, last_event=end, lag_events=lag, stalled_seconds=round(stalled, 1))
            if error := last_error():
                detail["retrying"] = error
            if undone := erasures_undone():
                detail["erasures_undone"] = undone
                detail["erasures_undone_action"] = (
                    "erasures done since the backup NATS was restored from are undone: "
                    "run `relaydesk customers erase-again` (see README: Backup and restore)"
                )
            if stalled >= stale_after:
                ok = False
                detail["reason"] = (
                    f"the projector has not moved for {stalled:.0f} s while {lag} events wait "
                    f"(at event {at}, [projection] stale_seconds {stale_after:g}): "
                    + (f"it retries after {error}; " if error else "see its log (projector.retry); ")
                    + "restarting it resumes from its checkpoint"
                )
                log.warning("projector.stalled", key=key, position=at, lag_events=lag, seconds=round(stalled, 1))
        return CheckResult(ok, detail)

    return check
