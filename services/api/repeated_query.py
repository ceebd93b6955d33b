"""A query parameter given more than once is refused with a 400 before any handler runs.

No route takes a list in its query: each reads one value (``request.query.get``), the first.
Found by a fuzzing audit (schemathesis): ``GET /v1/agents?limit=&limit=<junk>`` answered 200
as if ``limit`` were unset, the junk never read, and ``?agent=ava&agent=bruno`` acted for ava.
Whatever stands between a client and the API (a proxy, a gateway's rule, a log reader) may
read another of the values than the handler does; so no value is chosen: the request is
refused, for every route at once, naming the parameter (its values are not logged).
"""

from __future__ import annotations

from collections import Counter

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from services.api.common import json_error, loggable_path

log = structlog.get_logger(__name__)


def repeated(request: web.Request) -> tuple[str, int] | None:
    """The first query parameter named more than once, with how many times; None if none is."""
    counts = Counter(name for name, _ in request.query.items())  # keys() gives each name once
    for name, times in counts.items():
        if times > 1:
            return name, times
    return None


@web.middleware
async def refuse_repeated_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 naming the query parameter given more than once."""
    found = repeated(request)
    if found is None:
        return await handler(request)
    name, times = found
    log.info("api.repeated_query_refused", method=request.method, path=loggable_path(request), parameter=repr(name))
    return json_error(400, f"query parameter {name!r} is given {times} times: give it once")
