"""A fake provider's HTTP API on a free local port, for the tests' provider fakes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aiohttp import web

from services.bus.embedded import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) until the block ends; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving_posts(routes: Mapping[str, Handler]) -> AsyncIterator[str]:
    """``serving`` an app of POST routes (path → handler)."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    async with serving(app) as url:
        yield url
