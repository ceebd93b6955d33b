"""A request body must be all there within a deadline, on every route of the API.

aiohttp closes a connection whose head trickles in (the keep-alive timeout) but waits for a
body for ever: a client that sent a head with ``Content-Length`` and then nothing held a request
and its handler for as long as it liked, and several routes read the body before anything
proves who sends it (the console's sign-in, the Slack request URLs; found by audits). So a
request whose body has not all arrived ``connectors.sdk.http.BODY_TIMEOUT`` seconds after its
handling began (the connectors' and the sinks' deadline too; an upload: ``UPLOAD_BODY_TIMEOUT``)
is answered 408 and its handler stopped. Only the arrival is timed, not the handling: a body
that is all there is never cut short by a slow handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from connectors.sdk import http as connector_http
from events.skips import count_skip
from services.api import uploads
from services.api.common import loggable_path

log = structlog.get_logger(__name__)

# A file of up to 25 MB from an agent on a slow link: about 40 KB/s at the least.
UPLOAD_BODY_TIMEOUT = 600.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def deadline_of(request: web.Request) -> float:
    if request.method == "POST" and request.path == uploads.UPLOADS_PATH:
        return UPLOAD_BODY_TIMEOUT
    return connector_http.BODY_TIMEOUT  # read now: tests shorten it


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.body_exists or request.content.is_eof():
        return await handler(request)
    task = asyncio.current_task()
    assert task is not None
    timeout = deadline_of(request)
    late = False

    def check() -> None:
        nonlocal late
        if not request.content.is_eof():
            late = True
            task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, check)
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if not late or task.uncancel() > 0:
            raise  # cancelled for another reason (the server stopping, the client gone)
        log.info("api.body_too_slow", method=request.method, path=loggable_path(request), deadline_s=timeout)
        count_skip("api.body_too_slow")
        return web.json_response(
            {"error": f"the request body did not arrive within {timeout:g} s"},
            status=408,
            headers={"Connection": "close"},
        )
    finally:
        timer.cancel()
