"""Service reports: ``GET /v1/reports/service?from=&to=&group_by=&reopen_hours=&tz=``.

Figures are computed from the metrics projection (``services.reports``), which this process
keeps folded from the event log: it starts folding when the API starts, and every request
first folds what the log gained since, so the answer reflects the log up to ``as_of_seq``.
A fresh API on a long log answers 503 with its progress until the fold has caught up.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.api.common import ApiDeps, json_error, ok
from services.reports import BadQuery, ReportProjection, parse_query, service_report

WAIT_SECONDS = 20.0
"""How long a request waits for the projection to catch up before answering 503."""


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    projection = ReportProjection(deps.store)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # built outside an event loop: the first report starts the fold
    else:
        projection.start()  # fold the log while the API starts, so the first report is quick

    @r.get("/v1/reports/service")
    async def service(request: web.Request) -> web.Response:
        now = deps.clock()
        try:
            query = parse_query(request.query, now)
        except BadQuery as err:
            return json_error(400, str(err))
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                await projection.catch_up()
        except TimeoutError:
            # A fresh API folding a long log: say how far it is rather than hold the request.
            folded, target = projection.state.last_seq, projection.target
            response = json_error(
                503,
                f"the report projection is still folding the event log (at {folded} of {target}); try again shortly",
                folded_seq=folded,
                log_seq=target,
            )
            response.headers["Retry-After"] = "5"
            return response
        except Exception as err:  # NATS unreachable: say so rather than serve silently stale figures
            return json_error(503, f"the event log cannot be read right now: {err!r}")
        return ok(service_report(projection.state, query, now=now, sla_seconds=deps.policy.sla_seconds))

    return r
