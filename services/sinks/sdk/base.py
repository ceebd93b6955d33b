"""What a sink's author writes: a ``Sink`` subclass with its ``Settings``.

A sink mirrors Relaydesk's conversations into a helpdesk (Zendesk, Freshdesk…) and brings
the helpdesk's agents' answers back. It knows only the helpdesk's API and webhooks:

- ``handle(event)``: one log event of the kinds in ``handles`` (assigned, message received,
  reply requested, resolved…), in log order; make the helpdesk match it;
- ``verify(request)`` and ``webhook(request)``: the helpdesk's callbacks (a public reply, a
  status change), turned into actions with ``self.reply(...)`` / ``self.resolve(...)``.

The SDK (``SinkRuntime``) does the rest: a durable position on ``RD_EVENTS`` (resume after a
restart where it stopped), one active instance (lease ``sink.<name>``), its own KV bucket
(``self.state``: the conversation ↔ ticket mapping, which comments are its own), the
helpdesk client with retries and 429 ``Retry-After`` (``self.api``), parking of events the
helpdesk refuses (401/403 loudly, with a metric), and ``/healthz``, ``/readyz``, ``/metrics``.
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import msgspec
from multidict import CIMultiDictProxy

from connectors.sdk.base import convert_settings
from events.model import (
    ConversationAssigned,
    ConversationResolved,
    DeliveryFailed,
    LogEvent,
    MessageReceived,
    OfferAccepted,
    ReplyRequested,
)

from .actions import Outcome, Relaydesk
from .api import ProviderApi
from .errors import Malformed, SinkConfigError
from .state import SinkState


class SinkSettings(msgspec.Struct, kw_only=True):
    """Settings every sink has; a sink's ``Settings`` subclasses this and adds its own
    (helpdesk URL, credentials, webhook secret, agent mapping)."""

    # Read by `relaydesk up` (false: not started).
    enabled: bool = True
    # Where the helpdesk's webhooks are received (port 0: any free port).
    host: str = "127.0.0.1"
    port: int = 0
    max_body_bytes: int = 256 * 1024
    # Where a sink starts on the log the first time it runs (afterwards: where it stopped).
    # "end": only what happens from now on; "beginning": every conversation in the log.
    start: Literal["end", "beginning"] = "end"
    # Helpdesk API calls: tries per call, backoff base (s), total time per call (s), and the
    # longest 429 Retry-After waited out in one go (s).
    api_attempts: int = 5
    api_backoff: float = 0.5
    api_timeout: float = 15.0
    max_retry_after: float = 120.0
    # After an event failed for a passing reason (helpdesk down), wait this long (s) and try
    # the same event again: events are never skipped for a passing failure.
    retry_pause: float = 5.0
    # While the helpdesk refuses the sink's credentials (401/403), the sink waits on that event
    # and tries it again this often (s); later events wait behind it, in order, until an
    # operator fixes the credentials (nothing is parked or skipped).
    auth_retry_pause: float = 60.0
    # One active instance per sink: the lease's time to live (s).
    lease_seconds: float = 10.0
    # Replicas of the sink's KV bucket; `relaydesk` passes `[nats] replicas` unless set.
    replicas: int = 1
    # When a customer is erased (CustomerErased): "delete" what the sink put into the helpdesk
    # for them (a sink that implements it: Zendesk, Freshdesk), or "keep" it there (a legal hold,
    # the helpdesk's own retention); see services/sinks/sdk/erasure.py.
    on_erasure: Literal["delete", "keep"] = "delete"


# The settings ``basic_auth_api`` builds every helpdesk client with.
API_TIMINGS = ("api_attempts", "api_backoff", "api_timeout", "max_retry_after")


@dataclass(frozen=True)
class SinkEvent:
    """One log event for ``handle``: its stream sequence, subject and the event (personal
    fields opened)."""

    seq: int
    subject: str
    event: LogEvent


@dataclass(frozen=True)
class WebhookRequest:
    """A request from the helpdesk, body read whole (within ``max_body_bytes``)."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError) as err:
            raise Malformed("body is not valid JSON") from err
        except RecursionError as err:  # '[' * 5000: nested deeper than the parser goes
            raise Malformed("body is JSON nested too deeply") from err


def numeric_id(value: object, field: str) -> str:
    """A helpdesk id that is a number (an int, or a string of ASCII digits), as a string fit
    for a KV key; ``Malformed`` naming ``field`` otherwise (``str.isdigit`` alone would take
    ``"١٠٠٢"`` or ``"²"``, and ``">"`` or ``"a b"`` are no key at all)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    text = value.strip() if isinstance(value, str) else ""
    if not (text.isascii() and text.isdigit()) or len(text) > 30:
        raise Malformed(f"{field} must be a number")
    return text


def not_delivered(event: DeliveryFailed) -> str:
    """What a helpdesk agent reads, as an internal note on the ticket, of a reply that did not
    reach the customer (found by a docs audit: a reply written in the helpdesk that the provider
    refused, too long for SMS say, failed on the log and nobody in the helpdesk was told)."""
    what = "A reply bounced" if event.bounced else "A reply could not be delivered"
    return f"Relaydesk: {what} to the customer on {event.channel}: {event.reason or 'no reason given'}"


class Sink(ABC):
    """Base class of every sink (see the module docstring). Build one with
    ``MySink.from_config(raw_table)``; run it with ``SinkRuntime(sink, nc, store)``."""

    name: ClassVar[str]
    Settings: ClassVar[type[SinkSettings]] = SinkSettings
    # The log events handed to ``handle``; every other event only moves the position.
    # An agent holds a conversation after ConversationAssigned (the router assigned it) or
    # OfferAccepted (she accepted its offer).
    handles: ClassVar[tuple[type[LogEvent], ...]] = (
        ConversationAssigned,
        OfferAccepted,
        MessageReceived,
        ReplyRequested,
        DeliveryFailed,  # a reply that did not reach the customer: tell the helpdesk's agents
        ConversationResolved,
    )
    # POST routes for the helpdesk's webhooks.
    webhook_paths: ClassVar[tuple[str, ...]] = ("/webhook",)
    # The settings ``make_api`` reads besides the SDK's API timings (``API_TIMINGS``): its URL
    # and credentials. Changed in the config or a secret file while the helpdesk refuses the
    # credentials, they are taken without a restart and the client is rebuilt (``reload``).
    api_settings: ClassVar[tuple[str, ...]] = ()

    # Given by the runtime before anything is handled (``attach``).
    state: SinkState
    relaydesk: Relaydesk
    api: ProviderApi

    def __init__(self, settings: SinkSettings) -> None:
        if not isinstance(settings, self.Settings):
            raise TypeError(f"{type(self).__name__} needs {self.Settings.__name__}")
        self.settings = settings

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None = None) -> Self:
        """Build from a raw ``[sinks.<name>]`` table. ``SinkConfigError`` on an unknown key
        (a typo would leave a setting at its default unnoticed), a bad value, or what
        ``problems`` finds missing."""
        sink = cls(convert_settings(cls.Settings, raw, f"[sinks.{cls.name}]", SinkConfigError))
        problems = sink.problems()
        if problems:
            raise SinkConfigError(f"[sinks.{cls.name}] " + "; ".join(problems))
        return sink

    @property
    def actor(self) -> str:
        """Who the sink's own facts name as their actor; an event with it came from this sink."""
        return f"sink:{self.name}"

    def is_own(self, event: LogEvent) -> bool:
        """The event was appended by this sink (a helpdesk reply or a solved ticket coming
        back): syncing it to the helpdesk again would loop."""
        return getattr(event, "actor", "") == self.actor

    # -- what the author writes ------------------------------------------------------------

    def problems(self) -> list[str]:
        """Settings that are missing or inconsistent (empty: fine)."""
        return []

    def api_keys(self) -> tuple[str, ...]:
        """Every setting the API client is built from (``api_settings`` and the timings)."""
        return (*self.api_settings, *API_TIMINGS)

    @abstractmethod
    def make_api(self) -> ProviderApi:
        """The helpdesk's API client (base URL and authorization from the settings)."""

    @abstractmethod
    async def handle(self, item: SinkEvent) -> None:
        """Make the helpdesk match one log event. Idempotent: after a crash the last event
        may come again. Raise ``Transient`` to have it tried again later; helpdesk refusals
        raised by ``self.api`` park it."""

    @abstractmethod
    def verify(self, request: WebhookRequest) -> None:
        """Raise ``Unauthentic`` unless the webhook provably comes from the helpdesk."""

    @abstractmethod
    async def webhook(self, request: WebhookRequest) -> Mapping[str, Any]:
        """Act on a verified webhook (``self.reply``, ``self.resolve``) and return the JSON
        answer. Raise ``Malformed`` for a body that cannot be understood."""

    # -- provided -------------------------------------------------------------------------

    def basic_auth_api(self, base_url: str, user: str, password: str) -> ProviderApi:
        """A ``make_api`` for a helpdesk with HTTP Basic auth, retrying as the settings say."""
        s = self.settings
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        return ProviderApi(
            self.name,
            base_url,
            f"Basic {credentials}",
            attempts=s.api_attempts,
            backoff=s.api_backoff,
            timeout=s.api_timeout,
            max_retry_after=s.max_retry_after,
        )

    def attach(self, state: SinkState, relaydesk: Relaydesk, api: ProviderApi) -> None:
        self.state = state
        self.relaydesk = relaydesk
        self.api = api

    def agents_of(self, helpdesk_user: str) -> frozenset[str]:
        """The Relaydesk agents mapped to this helpdesk user id (the settings' ``agents``,
        Relaydesk agent id → helpdesk user id); empty for a user mapped to none."""
        agents = getattr(self.settings, "agents", None) or {}
        wanted = helpdesk_user.strip()
        return frozenset(agent for agent, user in agents.items() if wanted and str(user) == wanted)

    async def reply(self, conversation_id: str, text: str, *, key: str, author: str) -> Outcome:
        """Send ``text`` to the customer of a linked conversation on the customer's own
        channel; ``key`` (the helpdesk's comment id) makes it happen once. ``author`` is the
        helpdesk user id of who wrote it: only the agent holding the conversation may answer
        its customer ("not_holder" otherwise; say so on the ticket with ``not_sent_note``)."""
        link = await self.state.link(conversation_id)
        if link is None:
            return "unknown"
        return await self.relaydesk.reply(
            link.customer_id, conversation_id, text, key=f"{self.name}:{key}", authors=self.agents_of(author)
        )

    def not_sent_note(self, comment_id: str) -> str:
        """The internal note that tells the helpdesk's agents a reply of theirs was not sent."""
        return (
            f"Relaydesk did not send comment {comment_id} to the customer: only the agent who holds the "
            f"conversation in Relaydesk (mapped in [sinks.{self.name}] agents) answers it from here. "
            "Take the conversation in Relaydesk first, or ask the agent who holds it."
        )

    async def resolve(self, conversation_id: str, *, key: str) -> Outcome:
        """Resolve a linked conversation (once)."""
        link = await self.state.link(conversation_id)
        if link is None:
            return "unknown"
        return await self.relaydesk.resolve(link.customer_id, conversation_id, key=f"{self.name}:{key}")
