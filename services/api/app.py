"""The HTTP API: one aiohttp application composed of route groups, one module each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from events.personal import KeyDestroyed
from events.streams import IDEMPOTENCY_BUCKET
from services import tracing
from services.api import (
    agent_api,
    agents,
    attachments,
    canned,
    caught_up,
    closings,
    conversation_queries,
    conversations,
    custody,
    customers,
    deliveries,
    dlq,
    docs,
    erasure_jobs,
    health,
    idempotency,
    known_conversations,
    notes,
    outbound,
    registry,
    replies,
    reports,
    session,
    slack_routes,
    stream,
    templates,
    tokens,
    traced,
    uploads,
)
from services.api.auth import authenticate, authorize, deactivated
from services.api.body_deadline import body_deadline
from services.api.common import ApiDeps, loggable_path
from services.api.errors import json_errors
from services.api.nul_refusal import refuse_nul
from services.api.repeated_query import refuse_repeated_query
from services.api.views import LANGUAGE_REASON_UNREAD
from services.metrics import measured

__all__ = ["ApiDeps", "build_app"]

log = structlog.get_logger(__name__)

# The largest request body the API reads (aiohttp's client_max_size): 413 past it.
BODY_LIMIT = 256 * 1024

ROUTE_GROUPS = (
    *(health, conversation_queries, conversations, customers, agents, agent_api, deliveries, dlq, reports),
    *(registry, slack_routes),
    *(notes, canned, attachments),  # the console's workspace: internal notes, canned replies, attachment links
    *(outbound, templates, uploads),  # agents start conversations, WhatsApp templates, files in replies
)


def build_app(deps: ApiDeps) -> web.Application:
    from services import console

    # Counted by the API alone, so exported by it alone, from its start (services.metrics.measured).
    measured(tokens.TOKENS_REFUSED)
    measured(LANGUAGE_REASON_UNREAD)
    keys = tokens.accepted_keys(deps)  # signs with the first; the others are the old ones, accepted
    table = tokens.TokenTable(*keys)
    # Idempotency-Key between who is calling and what they may do (services.api.idempotency).
    # An agent token issued through another API process a moment ago is looked up again
    # (caught_up.py), one look-up at a time for every unknown token: anyone may send one.
    authn = authenticate(
        deps.token,
        table,
        catch_up=caught_up.SharedCatchUp(lambda: caught_up.agent_events(deps)),
        operators=deps.operators,
    )
    sessions = session.SessionSealer(*keys)
    signed_out = session.SessionsEnded(lambda: deps.nc.jetstream().key_value(IDEMPOTENCY_BUCKET))
    middlewares = [
        # aiohttp's own errors (404, 405, 413), a body that does not decode (400) and NATS away
        # or slow (503; aiohttp answers a TimeoutError with a blank 504) as {"error": ...} too
        json_errors(BODY_LIMIT),
        body_deadline,  # a body not all there within 30 s: 408 (body_deadline.py)
        refuse_nul,  # no value kept can hold a NUL: a 400, not a database's 500 (nul_refusal.py)
        refuse_repeated_query,  # ?limit=1&limit=x: a 400, not the first value read (repeated_query.py)
        session.cookie_session(sessions, signed_out),  # a console session cookie becomes the bearer (session.py)
        authn,
        idempotency.idempotency(deps),
        # a command's conversation or agent as the log has it, whichever API wrote it (caught_up.py)
        caught_up.caught_up(deps),
        authorize(deps),
        refuse_for_erased_customers,
    ]
    if tracing.enabled():  # each command a span, continued by what it appends (traced.py)
        middlewares.insert(middlewares.index(authn) + 1, traced.traced_commands)
    app = web.Application(middlewares=middlewares, client_max_size=BODY_LIMIT)
    tokens.install(app, table, deps.live)
    stream.install(app, deps.live)
    held = custody.install(app, deps.live)  # who held what: the access rules (services.api.custody)
    known_conversations.install(deps, held)  # and what was resolved unheld: ids known without a search
    replies.install(app, deps)
    closings.install(app, deps)  # the web chat hears that its conversation was resolved
    canned.install(app, deps)  # the bucket of the team's canned replies
    erasure_jobs.install(app, deps)  # erasures a crash left unfinished are run again
    for group in ROUTE_GROUPS:
        app.add_routes(group.routes(deps))
    app.add_routes(tokens.routes(deps, table))
    app.add_routes(stream.routes(deps, table))
    app.add_routes(session.routes(sessions, signed_out, authn, refused=lambda agent_id: deactivated(deps, agent_id)))
    app.add_routes(console.routes())
    app.add_routes(docs.routes())  # /openapi.json and /docs, no token
    app.on_response_prepare.append(no_sniffing)
    return app


async def no_sniffing(_request: web.Request, response: web.StreamResponse) -> None:
    """Every answer is read as the type it says: a JSON answer quoting what a customer wrote
    (a name, a subject) is never sniffed into a page on the console's origin. Answers that set
    their own (files, the console) keep theirs."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


@web.middleware
async def refuse_for_erased_customers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A command that would record personal data about an erased customer (a reply, a note)
    cannot seal it (their key is destroyed, ``events.personal``): 410, not a 500."""
    try:
        return await handler(request)
    except KeyDestroyed as err:
        log.info("api.customer_erased_refused", method=request.method, path=loggable_path(request), key=str(err))
        return web.json_response({"error": "this customer was erased: nothing about them can be recorded"}, status=410)
