"""Liveness and readiness (no token needed)."""

from __future__ import annotations

from aiohttp import web

from events.streams import streams_exist
from services.api.common import ApiDeps, ok


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return ok({"status": "ok"})

    @r.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        connected = deps.nc.is_connected
        streams = connected and await streams_exist(deps.nc.jetstream())
        body = {"nats_connected": connected, "streams": streams}
        return ok({"status": "ready", **body}) if streams else ok({"status": "not ready", **body}, status=503)

    return r
