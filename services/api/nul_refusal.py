"""A NUL character in a request's query or path is refused with a 400 before any handler runs.

No value Relaydesk keeps can hold one: PostgreSQL's text cannot, and SQLite's full-text query
language cannot quote one. Found by a review of the customer search index: `GET
/v1/customers?q=%00ab` reached SQLite's FTS5 as an unterminated string and PostgreSQL as a
DataError, each a 500. Refused here for every route at once, so no handler has to know.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from services.api.common import json_error, loggable_path

log = structlog.get_logger(__name__)

NUL = "\x00"


@web.middleware
async def refuse_nul(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 naming the query parameter or path part that holds a NUL (its value is not logged)."""
    for name, value in request.query.items():
        if NUL in name or NUL in value:
            return _refused(request, f"query parameter {name.replace(NUL, '')!r}")
    for name, value in request.match_info.items():
        if NUL in value:
            return _refused(request, f"path part {{{name}}}")
    return await handler(request)


def _refused(request: web.Request, where: str) -> web.Response:
    log.info("api.nul_refused", method=request.method, path=loggable_path(request).replace(NUL, ""), where=where)
    return json_error(400, f"{where} holds a NUL character (U+0000), which no value may hold")
