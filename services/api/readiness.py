"""Until the API's view has caught up with the log, what depends on it answers 503 with the
reason and where the view stands (``Retry-After``), rather than an answer from a view that
does not yet include what was written before the API started."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from services.api.readmodel import LiveState

log = structlog.get_logger(__name__)

# Paths served whatever the view's state: probes, metrics, the console's static page.
ALWAYS = ("/healthz", "/readyz", "/metrics", "/console", "/static")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def not_caught_up(live: LiveState) -> web.Response:
    body = {
        "error": "not ready: the API is still reading the log (its view is not caught up yet)",
        **live.progress(),
    }
    return web.Response(
        body=msgspec.json.encode(body), status=503, content_type="application/json", headers={"Retry-After": "1"}
    )


def until_caught_up(live: LiveState) -> Middleware:
    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if live.caught_up.is_set() or request.path.startswith(ALWAYS):
            return await handler(request)
        return not_caught_up(live)

    return gate
