"""What an integrator implements: a ``Connector`` subclass with its ``Settings``.

A connector knows only its provider's wire format. It says which HTTP paths it serves,
how to check that a request really comes from the provider (``verify``), how to turn a
request into ``InboundMessage``s (``parse``) and how to send a reply (``deliver``). The SDK
(``connectors.sdk.runtime.ConnectorRuntime``) does everything else: body size limits,
publishing to ``rd.inbound.<channel>`` with ``Nats-Msg-Id``, waiting for the JetStream ack
before answering success, 503 when NATS is away, metrics, structured logs, and the outbound
worker with retries that reports each reply's outcome on ``rd.inbound.<channel>``
(``ReplyOutcomeReported``); intake records it on the log as ``MessageSent`` /
``DeliveryFailed``. A connector never writes the log itself.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import unquote

import aiohttp
import msgspec
import structlog
from aiohttp import web
from multidict import CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from events.model import Channel, DeliverReply, InboundMessage

from . import json_text
from .errors import ConnectorConfigError, Malformed

_log = structlog.get_logger("relaydesk.connector")


class ConnectorSettings(msgspec.Struct, kw_only=True):
    """Settings every connector has; a connector's ``Settings`` subclasses this and adds
    its own (secrets, base URLs). Built from the raw ``[connectors.<name>]`` table with
    ``Connector.from_config(raw)``; values from the environment may be strings."""

    # Read by `relaydesk up` (false: not started); ignored by the connector itself.
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    # Seconds to wait for JetStream to acknowledge every message of one request; past it: 503.
    ack_timeout: float = 5.0
    # Largest request body accepted; bigger gets 413.
    max_body_bytes: int = 1024 * 1024
    # Outbound: run the worker that delivers rd.out.<channel> commands.
    outbound: bool = True
    # Tries per reply (first included) for transient provider failures, the pause before the
    # second (s; doubled before each next) and the longest pause. The defaults ride out a
    # provider outage of about two minutes (0.5 + 1 + … + 30 s): with 4 tries and no ceiling,
    # every reply written during a blip of more than ~3.5 s failed for good (an outage audit).
    deliver_attempts: int = 10
    deliver_backoff: float = 0.5
    deliver_backoff_max: float = 30.0
    # The longest pause before a retry that a provider's Retry-After gets (s): a throttled
    # provider is not asked again sooner than it said, up to this (the reply stays held).
    deliver_retry_after_max: float = 60.0
    # Total time for one provider API call (s).
    deliver_timeout: float = 15.0
    # Fetch batch and idle wait of the outbound pull consumer.
    outbound_batch: int = 10
    outbound_fetch_timeout: float = 2.0
    # Replicas of the streams and buckets the connector creates (the chat history, email
    # attachments); `relaydesk` passes `[nats] replicas` unless the table sets it.
    replicas: int = 1
    # Days a customer's message text is kept (`[retention] message_days`, which `relaydesk`
    # passes unless the table sets it; 0: no limit). What a connector keeps of message text
    # itself (the web chat's history) it keeps no longer.
    message_days: int = 0
    # Files in replies: the largest file and the types (exact, or prefixes like "image/") the
    # API lets a reply on this channel carry; 0 / empty: the channel's defaults (services.api.uploads).
    max_attachment_bytes: int = 0
    attachment_types: list[str] = []

    def __post_init__(self) -> None:
        # Checked here, not by annotations, so that a connector redeclaring ``port`` or
        # ``max_body_bytes`` with its own default keeps the check. Found by an integrator:
        # ``ack_timeout = -1`` answered every webhook 503 and ``max_body_bytes = -5`` every one 413.
        for name, low, high in _RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                bound = f"at least {low:g}" if high == math.inf else f"within {low:g}..{high:g}"
                raise ValueError(f"{name} must be {bound}, not {value!r}")


_TINY = 1e-3  # a timeout of zero is "never wait", which nothing here means
_RANGES: tuple[tuple[str, float, float], ...] = (
    ("port", 0, 65535),
    ("ack_timeout", _TINY, math.inf),
    ("max_body_bytes", 1, math.inf),
    ("deliver_attempts", 1, math.inf),
    ("deliver_backoff", 0, math.inf),
    ("deliver_backoff_max", 0, math.inf),
    ("deliver_retry_after_max", 0, math.inf),
    ("deliver_timeout", _TINY, math.inf),
    ("outbound_batch", 1, math.inf),
    ("outbound_fetch_timeout", _TINY, math.inf),
    ("replicas", 1, 5),
    ("message_days", 0, math.inf),
    ("max_attachment_bytes", 0, math.inf),
)


@dataclass(frozen=True)
class ProviderRequest:
    """An HTTP request from the provider, body already read (within the size limit)."""

    method: str
    scheme: str  # as the server saw it (behind a TLS proxy: http)
    host: str  # the Host header, port included when sent
    raw_path: str  # path and query exactly as sent (percent-encoding kept)
    headers: CIMultiDictProxy[str]
    body: bytes
    raw: web.Request | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        """The URL as received, byte for byte (scheme and host as this server saw them)."""
        return f"{self.scheme}://{self.host}{self.raw_path}"

    @property
    def path(self) -> str:
        return self.raw_path.split("?", 1)[0]

    @property
    def query(self) -> MultiDictProxy[str]:
        return URL(self.raw_path, encoded=True).query

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def form(self) -> MultiDictProxy[str]:
        """The body as ``application/x-www-form-urlencoded`` (UTF-8), strictly: bad
        encoding raises ``Malformed``. Repeated names keep every value, in order. Parsed
        once per request (``verify`` and ``parse`` both read it)."""
        cached: MultiDictProxy[str] | None = self.__dict__.get("_form")
        if cached is not None:
            return cached
        try:
            pairs = parse_form(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise Malformed("body is not valid UTF-8 form encoding") from err
        form = MultiDictProxy(MultiDict(pairs))
        object.__setattr__(self, "_form", form)  # frozen dataclass: a cache, not a field
        return form

    def json(self) -> Any:
        """The body as JSON; anything else raises ``Malformed``."""
        try:
            return json_text.loads(self.body)
        except json_text.NotText as err:
            raise Malformed(f"body is not valid JSON text: {err}") from err
        except (UnicodeDecodeError, ValueError) as err:
            raise Malformed("body is not valid JSON") from err
        except RecursionError as err:  # '{"a":' * 10000: nested deeper than the parser goes
            raise Malformed("body is JSON nested too deeply") from err


def parse_form(text: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True, errors="strict")``, the same pairs, without
    its two function calls per name and value when there is nothing to decode (most of a
    provider's form): a webhook's hot path."""
    pairs: list[tuple[str, str]] = []
    for field_ in text.split("&"):
        if not field_:
            continue
        name, _, value = field_.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = unquote(name, errors="strict")
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            value = unquote(value, errors="strict")
        pairs.append((name, value))
    return pairs


Handler = Callable[[ProviderRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One HTTP route. Without ``handler`` it is an inbound webhook: the SDK runs
    verify → parse → publish → ``accepted``. With a ``handler`` (status callbacks,
    GET verification challenges) the SDK reads the body within the size limit, calls
    ``verify`` first when ``verify`` is true, then the handler; SDK errors raised by the
    handler become the usual JSON answers."""

    method: str
    path: str
    handler: Handler | None = None
    verify: bool = True


@dataclass(frozen=True)
class DeliveryResult:
    """What ``deliver`` reports. ``retryable`` failures are tried again with backoff,
    up to ``deliver_attempts``, never sooner than ``retry_after`` seconds (the provider's
    ``Retry-After``, up to ``deliver_retry_after_max``); the last failure is reported as failed
    with ``reason`` (and recorded by intake as ``DeliveryFailed(reason)``)."""

    ok: bool
    provider_message_id: str = ""
    reason: str = ""
    retryable: bool = False
    retry_after: float | None = None

    @classmethod
    def sent(cls, provider_message_id: str = "") -> DeliveryResult:
        return cls(ok=True, provider_message_id=provider_message_id)

    @classmethod
    def failed(cls, reason: str, *, retryable: bool = False, retry_after: float | None = None) -> DeliveryResult:
        return cls(ok=False, reason=reason, retryable=retryable, retry_after=retry_after)


SettingsT = TypeVar("SettingsT", bound=msgspec.Struct)


def convert_settings(
    settings: type[SettingsT], raw: Mapping[str, Any] | None, section: str, error: type[Exception]
) -> SettingsT:
    """A plugin's ``Settings`` from its raw config table (strings from env are converted).
    Raises ``error`` naming ``section`` on a bad value or an unknown key (a typo would
    otherwise leave a setting at its default unnoticed)."""
    table = dict(raw or {})
    known = {f.encode_name for f in msgspec.structs.fields(settings)}
    unknown = sorted(set(table) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise error(f"{section} unknown key {unknown[0]!r}{hint}")
    try:
        return msgspec.convert(table, settings, strict=False)
    except msgspec.ValidationError as err:
        raise error(f"{section} {err}") from err


def utcnow() -> datetime:
    return datetime.now(UTC)


class Connector(ABC):
    """Base class of every connector.

    Subclasses set ``name`` (the entry-point and config-table name), ``channel`` (the
    ``Channel`` of the events, and the subjects ``rd.inbound.<channel>`` / ``rd.out.<channel>``),
    ``provider`` (recorded on each ``InboundMessage``), ``Settings`` and ``inbound_paths``
    (POST webhooks), then implement ``verify``, ``parse`` and ``deliver``.

    Build one with ``MyConnector.from_config(raw_table)``; run it with
    ``ConnectorRuntime(connector, nc)``.
    """

    name: ClassVar[str]
    channel: ClassVar[Channel]
    provider: ClassVar[str] = ""
    Settings: ClassVar[type[ConnectorSettings]] = ConnectorSettings
    inbound_paths: ClassVar[tuple[str, ...]] = ()
    # The ``DeliverReply.notice`` kinds ``deliver`` shows the customer (the web chat: ``resolved``);
    # the outbound worker acknowledges any other notice without calling ``deliver``.
    notices: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: ConnectorSettings) -> None:
        self.settings = settings
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None = None) -> Self:
        """Build from a raw ``[connectors.<name>]`` table (strings from env are converted).
        Raises ``ConnectorConfigError`` on a bad value or an unknown key (a typo would
        otherwise leave a setting at its default unnoticed)."""
        return cls(convert_settings(cls.Settings, raw, f"[connectors.{cls.name}]", ConnectorConfigError))

    # -- what the integrator writes ---------------------------------------------------

    @abstractmethod
    def verify(self, request: ProviderRequest) -> None:
        """Raise ``Unauthentic(reason)`` unless the request provably comes from the provider.
        May raise ``Malformed`` when the request cannot even be checked."""

    @abstractmethod
    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        """The customer messages in a verified request (possibly none), each with a stable
        ``provider_message_id``; raise ``Malformed(reason)`` when it cannot be understood."""

    @abstractmethod
    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        """Send ``reply.text`` to ``reply.contact`` through the provider's API (use ``self.http``).
        Return ``DeliveryResult.sent(id)`` or ``.failed(reason, retryable=...)``; raising
        ``TransientDeliveryError``, ``aiohttp.ClientError`` or ``TimeoutError`` also retries."""

    # -- optional hooks ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """Every route served; by default one inbound POST route per ``inbound_paths``."""
        return [Route("POST", path) for path in self.inbound_paths]

    def accepted(self, request: ProviderRequest, messages: Sequence[InboundMessage]) -> web.StreamResponse:
        """The success answer, sent only once every message is acknowledged by JetStream."""
        return web.json_response({"accepted": len(messages)})

    def attach(self, nc: Any, publisher: Any = None, metrics: Any = None) -> None:
        """Called by the runtime before ``startup``: the NATS connection, the runtime's
        inbound publisher and its metrics, for connectors that publish from somewhere other
        than an HTTP route (an SMTP server, a poller). HTTP-only connectors ignore it."""
        self.nc = nc
        if publisher is not None:
            self.publisher = publisher
        if metrics is not None:
            self.metrics = metrics

    async def startup(self) -> None:
        """Called by the runtime before serving (``self.http`` is ready, ``attach`` done)."""
        return None

    async def stopping(self) -> None:
        """Called by the runtime before the HTTP server stops: close long-lived requests
        (WebSockets, streams) here, or the server waits for them."""
        return None

    async def shutdown(self) -> None:
        """Called by the runtime after serving stopped, before ``self.http`` closes."""
        return None

    # -- provided -----------------------------------------------------------------------

    @property
    def http(self) -> aiohttp.ClientSession:
        """An HTTP client for the provider's API, opened by the runtime (or ``open_http``)."""
        if self._http is None or self._http.closed:
            raise RuntimeError(f"{self.name}: HTTP client not open (start the ConnectorRuntime first)")
        return self._http

    async def open_http(self) -> None:
        if self._http is None or self._http.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.deliver_timeout)
            self._http = aiohttp.ClientSession(timeout=timeout)

    async def close_http(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @staticmethod
    def now() -> datetime:
        return utcnow()
