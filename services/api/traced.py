"""Tracing on (``[tracing]``, services.tracing): each API command is a span, ``api.command``.

It continues the caller's W3C ``traceparent`` when one is sent (a helpdesk or CRM that traces
its own calls), else starts a trace; the events the command appends carry it beside them on the
log (``ApiDeps.append``) and a reply queued for a connector carries it in its NATS headers, so
an agent's reply is one trace from the API to the connector that sends it. Reads are not
traced (they write nothing). Off: the middleware is not installed.
"""

from __future__ import annotations

from aiohttp import web

from services import tracing
from services.api.auth import Handler
from services.api.common import ACTOR

COMMANDS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def traced_commands(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in COMMANDS or not request.path.startswith("/v1/"):
        return await handler(request)
    route = request.match_info.route.resource
    attributes = {
        "http.request.method": request.method,
        "http.route": route.canonical if route is not None else request.path,
        "relaydesk.actor": request.get(ACTOR, ""),  # ids only: operator[:name], agent:<id>
    }
    parent = {key: request.headers[key] for key in ("traceparent", "tracestate") if key in request.headers}
    with tracing.span("api.command", parent or None, kind="server", attributes=attributes):
        return await handler(request)
