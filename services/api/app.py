"""The HTTP API: one aiohttp application composed of route groups, one module each."""

from __future__ import annotations

from aiohttp import web

from services.api import (
    agent_api,
    agents,
    conversations,
    customers,
    deliveries,
    health,
    replies,
    reports,
    stream,
    tokens,
)
from services.api.auth import bearer_auth
from services.api.common import ApiDeps

__all__ = ["ApiDeps", "build_app"]

ROUTE_GROUPS = (health, conversations, customers, agents, agent_api, deliveries, reports)


def build_app(deps: ApiDeps) -> web.Application:
    from services import console

    table = tokens.TokenTable()
    app = web.Application(middlewares=[bearer_auth(deps.token, table, deps)], client_max_size=256 * 1024)
    tokens.install(app, table, deps.live)
    stream.install(app)
    replies.install(app, deps)
    for group in ROUTE_GROUPS:
        app.add_routes(group.routes(deps))
    app.add_routes(tokens.routes(deps, table))
    app.add_routes(stream.routes(deps, table))
    app.add_routes(console.routes())
    return app
