"""A command decides on a view that has read what it is about, whichever API process wrote it.

Several API processes behind a load balancer each fold the log on their own, a few milliseconds
apart. An agent created by one (201) was ``404 no agent`` to a status change sent at once to
the other; a conversation started on one was ``409 … is resolved`` to a reply sent at once to
the other (not in that view yet, but on the log: read as resolved), and an offer another API
already showed was ``409 has no open offer`` (or, for the agent's own token, 403) where the
view had not folded it. Found by a scale-out audit (two APIs, alternate requests).

So before a command on ``/v1/conversations/{id}/…`` or ``/v1/agents/{id}…`` (and an agent's
own ``/v1/agent/…``) is authorised and decided, this middleware reads the last sequence of that
conversation's or agent's subject (one direct get) and waits until this process's view has
folded it (``ApiDeps.has_read``: a 503 to retry when it does not within its wait). The view
then includes every write any API process answered before this request arrived, as on one
process (``ApiDeps.append`` waits for its own writes). Reads are not held: they show this
process's view as it is. An agent token this process does not know is looked up again once the
view has folded the log's last agent event (``agent_events``, from ``auth.authenticate``): one
issued through another API a moment ago was 401 there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

from events import subjects
from events.skips import count_skip
from services.api.auth import AGENT
from services.api.common import ApiDeps

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COMMANDS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# What a command waits for when its conversation is unknown to this view: the log's end as it
# stood when the command came (one STREAM.INFO), not a search under every customer.
LOG_END = "<the log's end>"


def subject_of(
    request: web.Request, customer_of: Callable[[str], str | None] = lambda _: None, *, search: bool = True
) -> str | None:
    """The log subject (or a filter) of what a command request is about; None: none to wait for.
    A conversation whose customer the view knows (``customer_of``) is its own subject. Another,
    where the view knows every conversation it has read (``search=False``,
    services.api.known_conversations), is ``LOG_END``: once the view has read that far it knows
    the conversation, or there is none. Else it is looked for under every customer
    (``rd.evt.c.*.<id>``), which the server answers by walking every customer's subjects (found
    by a security audit: on a log of millions of customers, the cost of any made-up id an agent
    token sends)."""
    if request.method not in COMMANDS:
        return None
    path = request.path
    named = request.match_info.get("id", "")
    if path.startswith("/v1/conversations/") and subjects.is_token(named):
        customer_id = customer_of(named)
        if customer_id:
            return subjects.conversation(customer_id, named)
        return subjects.conversation_filter(named) if search else LOG_END
    if path.startswith("/v1/agents/") and subjects.is_token(named):
        return subjects.agent(named)
    if path.startswith("/v1/agent/"):
        agent_id = request.get(AGENT) or request.query.get("agent", "")
        if agent_id and subjects.is_token(agent_id):
            return subjects.agent(agent_id)
    return None


async def has_read_subject(deps: ApiDeps, subject: str) -> None:
    """Until this process's view has folded the last event of ``subject`` (none: at once), or
    the whole log as it ends now (``LOG_END``)."""
    last = await (deps.store.last_seq() if subject == LOG_END else deps.store.last_subject_seq(subject))
    await deps.has_read(last)


async def agent_events(deps: ApiDeps) -> None:
    """Until this view has folded the log's last agent event, or gave up waiting (an agent
    token unknown here: issued through another API process a moment ago?)."""
    try:
        last = await deps.store.last_subject_seq(subjects.AGENT_EVENTS_ALL)
    except Exception as err:  # NATS away: the token is as unknown as it was (401), not a 503
        log.warning("api.token_catch_up_failed", error=type(err).__name__, skipped="the look-up of unknown tokens")
        count_skip("api.token_catch_up")
        return
    if last:
        await deps.live.wait_for(last)


class SharedCatchUp:
    """``agent_events`` for every unknown token at once, one look-up at a time.

    Anyone may send a token shaped like an issued one, without any other credential: each
    was a NATS read of its own and a waiter of its own on the view (found by a security
    audit: a flood of made-up tokens was as many reads of the log, all at once). Callers now
    share: a caller that finds no look-up under way starts one; one that finds a look-up
    under way, begun before it arrived (so perhaps before a token issued elsewhere was on the
    log), waits for the next, which all such callers share. So at most one look-up runs and
    one waits to, however many requests come, and each caller still gets a look-up that
    began after it arrived. A caller that goes away does not stop the look-up of the others.
    """

    def __init__(self, look_up: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._look_up = look_up
        self._running: asyncio.Task[None] | None = None
        self._next: asyncio.Task[None] | None = None

    async def __call__(self) -> None:
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._look_up(), name="api-token-catch-up")
            mine = self._running
        else:
            if self._next is None or self._next.done():
                self._next = asyncio.create_task(self._after(self._running), name="api-token-catch-up-next")
            mine = self._next
        await asyncio.shield(mine)

    async def _after(self, running: asyncio.Task[None]) -> None:
        # Only its end is awaited, not its outcome: agent_events logs and counts its own failures.
        await asyncio.wait([running])
        current = asyncio.current_task()
        assert current is not None
        self._running, self._next = current, None  # callers from now on wait for the one after
        await self._look_up()


def caught_up(deps: ApiDeps) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware: after authentication (an anonymous request costs NATS nothing), before
    the access rules and the handler, which read the view."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        known = deps.known_conversations

        def known_customer(conversation_id: str) -> str | None:
            conv = deps.live.state.conversations.get(conversation_id)
            if conv is not None:
                return conv.customer_id
            return known.customer(conversation_id) if known is not None else None

        subject = subject_of(request, known_customer, search=known is None)
        if subject is not None:
            await has_read_subject(deps, subject)
        return await handler(request)

    return middleware
