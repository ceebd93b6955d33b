"""Bearer-token authentication and the agent's reach.

The operator token (``[api] token``) acts as ``operator`` on everything. An agent token
(issued with ``POST /v1/agents/{id}/tokens``, see ``services.api.tokens``) acts as
``agent:<id>`` and reaches only its own things: ``/v1/agent/...``, its own agent record and
status, the conversations offered or assigned to it (and their customers' timelines).
Anything else is 403 with a reason; no token or an unknown/revoked one is 401.

Two steps, two middlewares: ``authenticate`` (who is calling) and ``authorize`` (may they do
this). The API puts the ``Idempotency-Key`` middleware between them, so that a retried
command answers its first result even when the first run changed what the caller may do now
(a retried accept finds the offer already accepted).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from router.state import RouterState
from services.api.common import ACTOR, ApiDeps, json_error
from services.api.tokens import TokenTable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs"})
PUBLIC_PREFIXES = ("/console",)

# The agent acting (None for the operator); set by the middleware.
AGENT = web.RequestKey("agent", str)
# The agent token's id (absent for the operator): the scope of its Idempotency-Keys.
TOKEN_ID = web.RequestKey("token_id", str)

_CONVERSATION_ACTION = re.compile(r"^/v1/conversations/([^/]+)(?:/(accept|decline|reply|transfer|escalate|resolve))?$")
_TIMELINE = re.compile(r"^/v1/customers/([^/]+)/timeline$")
_AGENT_SELF = re.compile(r"^/v1/agents/([^/]+)(/status)?$")


def operator_auth(token: str) -> Middleware:
    """The operator token only (kept for callers without an agent token table)."""
    return bearer_auth(token, None, None)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or any(path == p or path.startswith(p + "/") for p in PUBLIC_PREFIXES)


def bearer_auth(token: str, tokens: TokenTable | None, deps: ApiDeps | None) -> Middleware:
    """``authenticate`` then ``authorize`` in one middleware."""
    first = authenticate(token, tokens)
    second = authorize(deps)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        async def then(req: web.Request) -> web.StreamResponse:
            return await second(req, handler)

        return await first(request, then)

    return middleware


def authenticate(token: str, tokens: TokenTable | None) -> Middleware:
    """Sets ``ACTOR`` (and for an agent ``AGENT`` and ``TOKEN_ID``) or answers 401."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_public(request.path):
            return await handler(request)
        given = request.headers.get("Authorization", "")
        if not given:
            return json_error(401, "missing bearer token", hint="send 'Authorization: Bearer <token>'")
        if hmac.compare_digest(given.encode(), expected):
            request[ACTOR] = "operator"
            return await handler(request)
        scheme, _, bearer = given.partition(" ")
        record = tokens.record_for(bearer.strip()) if tokens is not None and scheme == "Bearer" else None
        if record is None:
            return json_error(401, "invalid token")
        request[ACTOR] = f"agent:{record.agent_id}"
        request[AGENT] = record.agent_id
        request[TOKEN_ID] = record.token_id
        return await handler(request)

    return middleware


def authorize(deps: ApiDeps | None) -> Middleware:
    """An agent reaches only its own things (``agent_refusal``): 403 with the reason."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        agent_id = request.get(AGENT)
        if deps is not None and agent_id is not None:
            refusal = agent_refusal(deps, agent_id, request.method, request.path)
            if refusal is not None:
                return json_error(403, refusal)
        return await handler(request)

    return middleware


def agent_refusal(deps: ApiDeps, agent_id: str, method: str, path: str) -> str | None:
    """Why ``agent_id`` may not do ``method path`` (None: it may)."""
    if path.startswith("/v1/agent/"):
        return None
    state = deps.live.state
    if m := _CONVERSATION_ACTION.match(path):
        cid, action = m.group(1), m.group(2)
        conv = state.conversations.get(cid)
        if conv is None:
            return None  # the handler answers 404
        if conv.agent_id != agent_id or conv.status not in ("offered", "assigned"):
            return f"conversation {cid} is not offered or assigned to you"
        if action in ("accept", "decline") and conv.status != "offered":
            return f"conversation {cid} has no open offer for you"
        if action not in ("accept", "decline") and conv.status != "assigned":
            # Replying to a customer and then letting the offer lapse to someone else would
            # leave two agents talking to one customer.
            return f"conversation {cid} is offered to you: accept it first"
        return None
    if (m := _TIMELINE.match(path)) and method == "GET":
        customer_id = m.group(1)
        # After a merge the agent's conversation keeps the merged customer's id; the agent
        # may read that part and the survivor's whole timeline.
        mine = any(
            c.agent_id == agent_id and customer_id in _customer_and_survivors(state, c.customer_id)
            for c in state.conversations.values()
        )
        return None if mine else "you hold no conversation of this customer"
    if (m := _AGENT_SELF.match(path)) and (method == "GET" or m.group(2)):
        return None if m.group(1) == agent_id else "an agent token acts only for its own agent"
    return "agent tokens may not use this endpoint (operator only)"


def _customer_and_survivors(state: RouterState, customer_id: str) -> set[str]:
    """``customer_id`` and every customer it was merged into, merges of merges included."""
    found = {customer_id}
    current = state.customers.get(customer_id)
    for _ in range(64):  # the fold refuses merge cycles; bounded anyway
        if current is None or current.merged_into is None:
            break
        found.add(current.merged_into)
        current = state.customers.get(current.merged_into)
    return found
