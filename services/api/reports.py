"""Service reports: ``GET /v1/reports/service?from=&to=&group_by=&reopen_hours=&tz=&limit=&cursor=``.

Figures are computed from the metrics projection (``services.reports``), which this process
keeps folded from the event log: it starts folding when the API starts, and every request
first folds what the log gained since, so the answer reflects the log up to ``as_of_seq``.
A fresh API on a long log answers 503 with its progress until the fold has caught up.

The groups come a page at a time (``services.api.paging``) for ``group_by=conversation`` (one
group per conversation: 54 MB at 100,000 of them, found by a scale audit), and for any grouping
asked with ``limit`` or ``cursor``; the others (channels, agents, queues, days) stay whole. A
page after the first carries its groups only (``total`` and ``by_hour`` are the first page's).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from services.api import paging
from services.api.common import ApiDeps, ApiError, json_error, ok
from services.reports import BadQuery, GroupPage, ReportProjection, ReportQuery, parse_query, service_report
from services.reports.fold import ReportState
from services.reports.metrics import GroupIndex, group_index

WAIT_SECONDS = 20.0
"""How long a request waits for the projection to catch up before answering 503."""

INDEX_SECONDS = 60.0
"""How long the groups of a paged report are kept for its next pages (``KeptIndex``)."""


@dataclass
class KeptIndex:
    """The groups of the last paged report's window, for its next pages: at 100,000
    conversations a pass to find them costs 0.2 s, a page of 1000 figures 20 ms. Used for a
    page asked with a cursor for the same window, within ``INDEX_SECONDS``, when that window
    had ended when the index was built (the facts in it are the fold's own, updated in place;
    a conversation opening later opens after the window)."""

    window: tuple[datetime, datetime, str | None, str]
    state: ReportState
    built: float  # time.monotonic()
    now: datetime
    index: GroupIndex

    def serves(self, query: ReportQuery, state: ReportState) -> bool:
        return (
            self.window == _window(query)
            and self.state is state
            and time.monotonic() - self.built < INDEX_SECONDS
            and query.end <= self.now
        )


def _window(query: ReportQuery) -> tuple[datetime, datetime, str | None, str]:
    return (query.start, query.end, query.group_by, query.tz)


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    projection = ReportProjection(deps.store)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # built outside an event loop: the first report starts the fold
    else:
        projection.start()  # fold the log while the API starts, so the first report is quick

    kept: KeptIndex | None = None

    @r.get("/v1/reports/service")
    async def service(request: web.Request) -> web.Response:
        nonlocal kept
        now = deps.clock()
        try:
            query = parse_query(request.query, now)
        except BadQuery as err:
            return json_error(400, str(err))
        page = group_page(request, query.group_by)
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
        state = projection.state
        if page.after is not None and kept is not None and kept.serves(query, state):
            index = kept.index
        else:
            index = group_index(state, query)
        body = service_report(state, query, now=now, sla_seconds=deps.policy.sla_seconds, page=page, index=index)
        if body["next_after"] is not None:  # more pages to come: keep the groups for them
            kept = KeptIndex(_window(query), state, time.monotonic(), now, index)
        after = body.pop("next_after")
        body["next_cursor"] = None if after is None else paging.encode_cursor((after,))
        return ok(body)

    return r


def group_page(request: web.Request, group_by: str | None) -> GroupPage:
    """``limit`` (1 to ``paging.MAX_LIMIT``; for ``conversation`` ``paging.DEFAULT_LIMIT`` unless
    asked, for the other groupings all of them) and ``cursor`` (the last group key served)."""
    after = paging.cursor_of(request, (str,))
    if after is not None and group_by is None:
        raise ApiError(400, "cursor pages the groups of a report: give the group_by of the page before")
    asked = "limit" in request.query or after is not None
    limit = paging.limit_of(request) if asked or group_by == "conversation" else None
    return GroupPage(after=None if after is None else str(after[0]), limit=limit, totals=after is None)
