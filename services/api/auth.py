"""Bearer-token authentication and who may do what.

The operator token (``[api] token``) acts as ``operator`` on everything; a named operator token
(``[api.operators]``, services.api.operators) acts with the same rights as ``operator:<name>``.
A token issued with
``POST /v1/agents/{id}/tokens`` (see ``services.api.tokens``) acts as ``agent:<id>``, or as
``supervisor:<id>`` when it was issued with ``"role": "supervisor"``; what each role may do
is one table, ``services.api.access.RULES``. Anything else is 403 with a reason; no token or
an unknown/revoked one is 401; a deactivated agent's tokens are 403.

Two steps, two middlewares: ``authenticate`` (who is calling) and ``authorize`` (may they do
this). The API puts the ``Idempotency-Key`` middleware between them, so that a retried
command answers its first result even when the first run changed what the caller may do now
(a retried accept finds the offer already accepted).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from services.api import operators as named_operators
from services.api.access import Role, refusal
from services.api.common import ACTOR, ROLE, ApiDeps, json_error
from services.api.custody import CUSTODY, Custody
from services.api.tokens import TOKEN_LENGTH, TOKEN_PREFIX, TokenTable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/v1/session"})
PUBLIC_PREFIXES = ("/console", "/slack", "/v1/files")  # /slack/…: Slack signs its requests (slack_routes)
# /v1/files/<token>: the signed link is the permission (providers fetch reply files; uploads.py)

# The agent acting, for agent and supervisor tokens (absent for the operator); set by the middleware.
AGENT = web.RequestKey("agent", str)
# The token's id (absent for the operator): the scope of its Idempotency-Keys.
TOKEN_ID = web.RequestKey("token_id", str)


def role_of(request: web.Request) -> Role:
    """Who is calling, as a role: ``operator``, ``supervisor`` or ``agent``. (The rules for
    notes, canned replies and every other route are in ``services.api.access.RULES``.)"""
    role = request.get(ROLE)
    return cast(Role, role) if role in ("operator", "supervisor", "agent") else "agent"  # unknown: the least


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or any(path == p or path.startswith(p + "/") for p in PUBLIC_PREFIXES)


def authenticate(
    token: str,
    tokens: TokenTable | None,
    catch_up: Callable[[], Awaitable[object]] | None = None,
    *,
    operators: named_operators.OperatorTable | Mapping[str, str] | None = None,
) -> Middleware:
    """Sets ``ACTOR`` (and for an agent ``AGENT`` and ``TOKEN_ID``) or answers 401.
    ``operators``: the ``[api.operators]`` table (name -> "sha256:<hex>"); an ``OperatorTable``
    is read at every request (the API replaces its content when the config file changes).

    An agent token this process does not know may have been issued through another API process
    a moment ago (a scale-out audit: a token issued on one API was 401 on the other): before
    the 401, ``catch_up`` (``caught_up.agent_events``) lets this view fold the log's last agent
    event, and the token is looked up again."""
    expected = f"Bearer {token}".encode()
    named = operators
    if not isinstance(named, named_operators.OperatorTable):
        named = named_operators.OperatorTable(named)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_public(request.path):
            return await handler(request)
        given = request.headers.get("Authorization", "")
        if not given:
            return json_error(401, "missing bearer token", hint="send 'Authorization: Bearer <token>'")
        if hmac.compare_digest(given.encode(), expected):
            request[ACTOR] = "operator"
            request[ROLE] = "operator"
            return await handler(request)
        scheme, _, bearer = given.partition(" ")
        if named and scheme == "Bearer" and (name := named.name_of(bearer.strip())):
            request[ACTOR] = f"operator:{name}"
            request[ROLE] = "operator"
            return await handler(request)
        record = tokens.record_for(bearer.strip()) if tokens is not None and scheme == "Bearer" else None
        if record is None and tokens is not None and catch_up is not None and looks_issued(scheme, bearer.strip()):
            await catch_up()
            record = tokens.record_for(bearer.strip())
        if record is None:
            return json_error(401, "invalid token")
        request[ACTOR] = f"{record.role}:{record.agent_id}"
        request[ROLE] = record.role
        request[AGENT] = record.agent_id
        request[TOKEN_ID] = record.token_id
        return await handler(request)

    return middleware


def looks_issued(scheme: str, bearer: str) -> bool:
    """Shaped like a token ``POST /v1/agents/{id}/tokens`` hands out (``tokens.new_token``)."""
    return scheme == "Bearer" and bearer.startswith(TOKEN_PREFIX) and len(bearer) == TOKEN_LENGTH


def authorize(deps: ApiDeps | None) -> Middleware:
    """Agent and supervisor tokens reach what ``services.api.access.RULES`` says: 403 with the reason."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        agent_id = request.get(AGENT)
        if deps is not None and agent_id is not None:
            custody = request.app.get(CUSTODY)
            why = agent_refusal(deps, agent_id, request.method, request.path, custody=custody, role=role_of(request))
            if why is not None:
                return json_error(403, why)
        return await handler(request)

    return middleware


def agent_refusal(
    deps: ApiDeps, agent_id: str, method: str, path: str, *, custody: Custody | None = None, role: Role = "agent"
) -> str | None:
    """Why a ``role`` token of ``agent_id`` may not do ``method path`` (None: it may)."""
    return deactivated(deps, agent_id) or refusal(role, agent_id, method, path, deps.live.state, custody)


def deactivated(deps: ApiDeps, agent_id: str) -> str | None:
    """Why ``agent_id``'s tokens are refused whatever they ask (None: they are not)."""
    agent = deps.live.state.agents.get(agent_id)
    if agent is not None and not getattr(agent, "active", True):
        return f"agent {agent_id} is deactivated"
    return None
