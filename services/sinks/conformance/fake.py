"""A local stand-in for a helpdesk's API, for sink tests: tickets and comments in memory, every
request recorded, and the helpdesk's bad days on demand (429 with ``Retry-After``, 401)."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from connectors.sdk.conformance.helpers import serve_locally

from ..sdk import SettingsSource, SettingsUnavailable


@dataclass(frozen=True)
class WebhookCall:
    """A webhook as the helpdesk would send it to the sink (``path`` on the sink's server)."""

    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class FakeComment:
    id: str
    body: str
    author: str
    public: bool = True
    staff: bool = False


@dataclass
class FakeTicket:
    id: str
    conversation_id: str  # how the sink tied it to its conversation (external id, tag…)
    requester: str
    assignee: str | None = None
    status: str = "open"
    tags: list[str] = field(default_factory=list)
    comments: list[FakeComment] = field(default_factory=list)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    at: float  # time.monotonic()


class FakeHelpdesk(ABC):
    """Subclass it: ``add_routes`` serves the helpdesk's API shapes over ``tickets``;
    ``agent_reply``, ``solve``, ``echo`` and ``forge`` build the webhooks the helpdesk would send.
    The base class checks ``authorization`` (401 otherwise), answers ``rate_limit_next`` 429s
    and records every request in ``seen``."""

    def __init__(self, authorization: str) -> None:
        self.authorization = authorization
        self.tickets: dict[str, FakeTicket] = {}
        self.seen: list[Seen] = []
        self.refuse_auth = False
        self._limits: list[str] = []
        self._ids = 1000
        self.url = ""
        self._runner: web.AppRunner | None = None

    def next_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    def rate_limit_next(self, n: int = 1, retry_after: str = "1") -> None:
        """Answer the next ``n`` API calls with 429 and this ``Retry-After``."""
        self._limits += [retry_after] * n

    def ticket_of(self, conversation_id: str) -> FakeTicket | None:
        found = [t for t in self.tickets.values() if t.conversation_id == conversation_id]
        assert len(found) <= 1, f"{len(found)} tickets for conversation {conversation_id}"
        return found[0] if found else None

    def tickets_of(self, conversation_id: str) -> list[FakeTicket]:
        return [t for t in self.tickets.values() if t.conversation_id == conversation_id]

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._limits:
            retry_after = self._limits.pop(0)
            self.seen.append(Seen(request.method, request.path, 429, time.monotonic()))
            return web.json_response({"error": "rate limited (fake)"}, status=429, headers={"Retry-After": retry_after})
        if self.refuse_auth or request.headers.get("Authorization") != self.authorization:
            self.seen.append(Seen(request.method, request.path, 401, time.monotonic()))
            return web.json_response({"error": "Couldn't authenticate you"}, status=401)
        response = await handler(request)
        self.seen.append(Seen(request.method, request.path, response.status, time.monotonic()))
        return response

    async def start(self) -> str:
        app = web.Application(middlewares=[self._gate])
        self.add_routes(app)
        self._runner, self.url = await serve_locally(app)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, condition: object, timeout: float = 10.0) -> None:
        """Until ``condition()`` is truthy (AssertionError after ``timeout``)."""
        assert callable(condition)
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"the fake helpdesk never reached the condition in {timeout}s")
            await asyncio.sleep(0.02)

    # -- the helpdesk's side ---------------------------------------------------------------------

    @abstractmethod
    def add_routes(self, app: web.Application) -> None:
        """The API routes the sink calls, in the helpdesk's documented shapes."""

    @abstractmethod
    def agent_reply(self, ticket: FakeTicket, text: str) -> WebhookCall:
        """An agent writes a public reply in the helpdesk: the comment, and its webhook."""

    @abstractmethod
    def solve(self, ticket: FakeTicket) -> WebhookCall:
        """An agent solves (resolves) the ticket: the new status, and its webhook."""

    @abstractmethod
    def echo(self, ticket: FakeTicket, comment: FakeComment) -> WebhookCall:
        """The webhook the helpdesk sends about a comment the sink itself posted."""

    @abstractmethod
    def forge(self, call: WebhookCall) -> WebhookCall:
        """``call`` as an impostor would send it (a wrong signature or secret)."""


class FakeSettings(SettingsSource):
    """A sink's settings source for tests: ``table`` is what the config says now (change it
    to rotate a token), ``problem`` a re-read that fails (a secret file gone, invalid TOML);
    ``reads`` counts the re-reads."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        self.table = dict(table)
        self.problem = ""
        self.reads = 0

    def __call__(self) -> Mapping[str, Any]:
        self.reads += 1
        if self.problem:
            raise SettingsUnavailable(self.problem)
        return dict(self.table)
