"""Liveness and readiness (no token needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from events.streams import streams_exist
from services.api.common import ApiDeps, ok
from services.intake.lag import export, read_lag
from services.nats_errors import NATS_ERRORS

log = structlog.get_logger(__name__)


async def view_progress(deps: ApiDeps) -> dict[str, Any]:
    """Where the API's view stands, beside the log's end now (when NATS answers)."""
    view = deps.live.progress()
    try:
        view["log_end"] = await deps.store.last_seq()
    except NATS_ERRORS as err:  # NATS away: the probe still answers, without the log's end
        log.debug("api.readyz_log_end_unknown", error=repr(err))
        view["log_end"] = None
    return view


async def intake_lag(deps: ApiDeps) -> dict[str, Any]:
    """Intake's lag (detail only: the API is ready whatever intake's backlog)."""
    try:
        lag = await asyncio.wait_for(read_lag(deps.nc.jetstream()), 2.0)
    except NATS_ERRORS as err:  # NATS away, or no intake consumer yet: said, not fatal
        log.debug("api.readyz_intake_lag_unknown", error=repr(err))
        return {"error": repr(err)[:200]}
    export(lag)  # the gauges on this process's /metrics too
    return lag.detail()


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return ok({"status": "ok"})

    @r.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        connected = deps.nc.is_connected
        streams = connected and await streams_exist(deps.nc.jetstream())
        view = await view_progress(deps)
        body = {"nats_connected": connected, "streams": streams, "view": view, "intake": await intake_lag(deps)}
        if streams and view["caught_up"]:
            return ok({"status": "ready", **body})
        reason = "the API's view has not caught up with the log yet" if streams else "NATS or its streams unavailable"
        return ok({"status": "not ready", "reason": reason, **body}, status=503)

    return r
