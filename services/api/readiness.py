"""Until the API's view has caught up with the log, what depends on it answers 503 with the
reason and where the view stands (``Retry-After``), rather than an answer from a view that
does not yet include what was written before the API started."""

from __future__ import annotations

import time
from collections import deque
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


# How long the view may leave unreached a log end /readyz saw before the API says not ready.
STALE_AFTER_S = 10.0


class Freshness:
    """Whether a caught-up view keeps up with the log: each probe notes the log's end, and the
    view is stale when it has not reached, ``after`` seconds later, an end a probe saw. A burst
    the view folds within that time is no staleness; a reader that has stopped (a paused
    process, a lost subscription) is, however long ago it caught up."""

    def __init__(self, after: float = STALE_AFTER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self.clock = clock
        self._seen: deque[tuple[float, int]] = deque()  # (when, log end) the view had not reached
        # The (position, log end) last said to be "ahead of the log": said once, not at every probe.
        self.ahead_said: tuple[int, int] | None = None

    def behind_for(self, position: int, log_end: int) -> float:
        """Seconds since the oldest log end the view has not reached was seen (0: none)."""
        now = self.clock()
        if position < log_end and (not self._seen or log_end > self._seen[-1][1]):
            if len(self._seen) >= 64:  # a view stuck for long: the oldest sight is what counts
                self._seen.pop()
            self._seen.append((now, log_end))
        while self._seen and self._seen[0][1] <= position:
            self._seen.popleft()
        return now - self._seen[0][0] if self._seen else 0.0

    def stale(self, position: int, log_end: int) -> float:
        """``behind_for`` when it is ``after`` seconds or more, else 0."""
        behind = self.behind_for(position, log_end)
        return behind if behind >= self.after else 0.0
