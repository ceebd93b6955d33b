"""Liveness and readiness (no token needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from events import subjects
from events.skips import count_skip
from events.streams import streams_exist
from services.api.common import ApiDeps, ok
from services.bus.errors import NATS_ERRORS
from services.health.checks import Check, CheckResult
from services.intake.lag import export, read_lag
from services.metrics import API_VIEW_LAG, PROJECTOR_LAG, measured
from services.timelines.store import DEFAULT_KEY

log = structlog.get_logger(__name__)


async def view_progress(deps: ApiDeps) -> dict[str, Any]:
    """Where the API's view stands, beside the log's end now (when NATS answers)."""
    view = deps.live.progress()
    try:
        view["log_end"] = await deps.store.last_seq()
    except NATS_ERRORS as err:  # NATS away: the probe still answers, without the log's end
        log.debug("api.readyz_log_end_unknown", error=repr(err))
        view["log_end"] = None
    if view["log_end"] is not None:
        view["lag_events"] = max(0, view["log_end"] - view["position"])
        measured(API_VIEW_LAG).set(view["lag_events"])  # exported by the API alone
    return view


async def projection_progress(deps: ApiDeps, log_end: int | None) -> dict[str, Any]:
    """Where the timelines projection the API reads stands (detail only: agents keep working
    while it lags; what only it answers says so, see conversations.py)."""
    if deps.timelines is None:
        return {"configured": False}
    try:
        checkpoints = await deps.timelines.checkpoints()
    except Exception as err:  # the database away: said here, the reads themselves fail loudly
        log.warning("api.readyz_projection_unknown", error=repr(err)[:200], skipped="the projection's lag")
        count_skip("api.readyz_projection")
        return {"error": repr(err)[:200]}
    out: dict[str, Any] = {"checkpoints": checkpoints}
    # One projector over the whole log: its lag is plain (partitions each see a share of it).
    # Measured as the projector measures it (services.health.checks.projector_check), against
    # the last customer event: agent events are not its to fold, and counting them showed an
    # idle system lagging, on the same gauge the projector sets to 0 (found by an audit).
    if log_end is not None and set(checkpoints) <= {DEFAULT_KEY}:
        try:
            end = await deps.store.last_subject_seq(subjects.CUSTOMER_EVENTS_ALL)
        except NATS_ERRORS as err:
            log.debug("api.readyz_projection_end_unknown", error=repr(err))
            return out
        out["lag_events"] = max(0, end - checkpoints.get(DEFAULT_KEY, 0))
        PROJECTOR_LAG.labels(projector=DEFAULT_KEY).set(out["lag_events"])
    return out


async def intake_lag(deps: ApiDeps) -> dict[str, Any]:
    """Intake's lag (detail only: the API is ready whatever intake's backlog)."""
    try:
        lag = await asyncio.wait_for(read_lag(deps.nc.jetstream()), 2.0)
    except NATS_ERRORS as err:  # NATS away, or no intake consumer yet: said, not fatal
        log.debug("api.readyz_intake_lag_unknown", error=repr(err))
        return {"error": repr(err)[:200]}
    export(lag)  # the gauges on this process's /metrics too
    return lag.detail()


async def readiness(deps: ApiDeps) -> tuple[bool, dict[str, Any]]:
    """Whether the API is ready, and the body that says why: NATS and its streams, the view
    caught up and keeping up (``deps.freshness``), with the intake and projection lags beside."""
    connected = deps.nc.is_connected
    if not connected:  # said at once: each question below would wait out its timeout
        body = {"nats_connected": False, "streams": False, "view": deps.live.progress()}
        return False, {"status": "not ready", "reason": "NATS or its streams unavailable", **body}
    streams = await streams_exist(deps.nc.jetstream())
    view = await view_progress(deps)
    body = {
        "nats_connected": connected,
        "streams": streams,
        "view": view,
        "intake": await intake_lag(deps),
        "projection": await projection_progress(deps, view["log_end"]),
    }
    stale = deps.freshness.stale(view["position"], view["log_end"]) if view["log_end"] is not None else 0.0
    # The position is read before the log's end: only a log restored or replaced under the
    # running API (an older backup) ends before it. The view then holds facts the log no longer
    # has and reads nothing new until the log passes it again (found by the upgrade audit: it
    # stayed ready, 'lag 0', while every later change went unseen). A restart folds the log as it is.
    ahead = view["log_end"] is not None and view["position"] > view["log_end"]
    if streams and view["caught_up"] and not stale and not ahead:
        return True, {"status": "ready", **body}
    if not streams:
        reason = "NATS or its streams unavailable"
    elif ahead:
        reason = (
            f"the API's view is ahead of the log (at event {view['position']}, the log ends at "
            f"{view['log_end']}): the log was restored or replaced under it; restart the API"
        )
        if deps.freshness.ahead_said != (view["position"], view["log_end"]):  # once, not at every probe
            deps.freshness.ahead_said = (view["position"], view["log_end"])
            log.error(
                "api.view_ahead_of_log", position=view["position"], log_end=view["log_end"], action="restart the API"
            )
    elif not view["caught_up"]:
        reason = "the API's view has not caught up with the log yet"
    else:
        reason = (
            f"the API's view has fallen behind the log: {view['lag_events']} events behind, "
            f"an end of the log it has not reached for {stale:.0f} s"
        )
        log.warning("api.view_behind", lag_events=view["lag_events"], seconds=round(stale, 1))
    return False, {"status": "not ready", "reason": reason, **body}


def health_check(deps: ApiDeps) -> Check:
    """The same readiness for the health port (``[health] port``, what Kubernetes probes): found
    by an audit, it said ready for 19 minutes while the API's own /readyz said its view was
    1.3 million events behind."""

    async def check() -> CheckResult:
        ready, body = await readiness(deps)
        return CheckResult(ready, body)

    return check


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return ok({"status": "ok"})

    @r.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        ready, body = await readiness(deps)
        return ok(body, status=200 if ready else 503)

    return r
