"""Parked messages (operator only): ``GET /v1/dlq``, ``GET /v1/dlq/{key}``,
``POST /v1/dlq/{key}/retry``, ``DELETE /v1/dlq/{key}``.

Also ``GET /metrics`` (operator token): this process's Prometheus counters, among them
``relaydesk_dead_letters_total{reader, stream}`` (with ``relaydesk up`` every service runs in
this process, so every reader's count is here).

The same operations as ``relaydesk dlq`` (``services.dlq``): dead letters (work messages
terminated after bounded redelivery, or undecodable) and quarantined log events, listed with
their error; a dead letter is re-driven on its original subject; a quarantined event is not
(409: the log is append-only, fix forward).
"""

from __future__ import annotations

from typing import get_args

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from events.parking import ParkedKind
from services.api.common import ACTOR, MAX_RECORDS, ApiDeps, ApiError, is_operator, json_error, ok, query_int
from services.api.health import intake_lag
from services.dlq import DeadLetters, DlqError, summary

log = structlog.get_logger(__name__)

KINDS: tuple[str, ...] = get_args(ParkedKind)


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    holder: list[DeadLetters] = []

    def dead_letters() -> DeadLetters:
        if not holder:
            holder.append(DeadLetters(deps.nc))
        return holder[0]

    def operator_only(request: web.Request) -> None:
        if not is_operator(request):
            raise ApiError(403, "parked messages are for operators")

    @r.get("/v1/dlq")
    async def list_parked(request: web.Request) -> web.Response:
        operator_only(request)
        kind = request.query.get("kind")
        if kind is not None and kind not in KINDS:
            return json_error(400, f"kind is one of {', '.join(KINDS)}")
        limit = query_int(request, "limit", 100, low=1, high=MAX_RECORDS)
        found = await dead_letters().list(kind)  # type: ignore[arg-type]
        return ok({"parked": [summary(record) for record in found[:limit]], "count": len(found)})

    @r.get("/v1/dlq/{key}")
    async def show_parked(request: web.Request) -> web.Response:
        operator_only(request)
        try:
            record = await dead_letters().get(request.match_info["key"])
        except DlqError as err:
            return json_error(err.status, err.reason)
        return ok(summary(record, with_data=True))

    @r.post("/v1/dlq/{key}/retry")
    async def retry_parked(request: web.Request) -> web.Response:
        operator_only(request)
        try:
            done = await dead_letters().retry(request.match_info["key"], request[ACTOR])
        except DlqError as err:
            return json_error(err.status, err.reason)
        return ok({"retried": done}, status=202)

    @r.delete("/v1/dlq/{key}")
    async def drop_parked(request: web.Request) -> web.Response:
        operator_only(request)
        key = request.match_info["key"]
        try:
            await dead_letters().drop(key, request[ACTOR])
        except DlqError as err:
            return json_error(err.status, err.reason)
        return ok({"dropped": key})

    @r.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        operator_only(request)
        await intake_lag(deps)  # refreshes the intake lag gauges (intake processes serve no HTTP)
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return r
