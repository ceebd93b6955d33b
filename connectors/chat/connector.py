"""The web chat connector: an embeddable widget, sessions, a WebSocket, agent replies pushed live.

Routes (default ``127.0.0.1:8083``):

* ``GET /`` demo page, ``GET /widget.js`` the widget (plain JS, no build step).
* ``POST /sessions`` ``{"widget_key", "visitor_id"?, "identity_token"?}`` from an allowed
  ``Origin`` → ``{"visitor_id", "token", "expires_in", "epoch", "last_seq", ...}`` (403 bad key
  or origin, 401 bad identity JWT with a reason, 400 malformed, 503 history unavailable).
* ``GET /ws`` WebSocket; the first frame is ``{"type":"auth","token":...}`` (optionally with
  ``after_seq`` and ``epoch``; ``?after_seq=N&epoch=E`` in the URL works too). Protocol in
  ``connectors/chat/README.md``.
* ``POST /messages`` ``{"client_msg_id","text"}`` with ``Authorization: Bearer <session token>``:
  the same send as a socket message, over plain HTTP. Both go through ``Inbound.accept``: validate,
  publish with the runtime's publisher (``Nats-Msg-Id`` dedupe, success only after the
  JetStream ack), then store the frame in the history stream; same limits, metrics and logs.

Every frame worth catching up on (visitor messages, agent replies) lives in the JetStream
stream ``RD_CHAT`` (``history.py``): it survives restarts and is shared by every instance.
Each instance subscribes to the live copies of the frames of the addresses whose sockets it
holds (``live.py``), so a reply delivered by any instance reaches the visitor's sockets on every instance;
a visitor who is away gets them on reconnect (``after_seq``). ``deliver`` reports sent once
the reply is stored in the stream, connected or not.

This module wires the parts: ``settings.py`` (settings and their checks), ``origins.py``
(allowed origins, CORS), ``sessions.py`` (``POST /sessions``, widget, demo page),
``inbound.py`` (visitor messages, ``POST /messages``), ``websocket.py`` (``GET /ws``),
``live.py`` (live push), ``protocol.py`` (close codes, frames), ``part.py`` (what the
parts share), ``ratelimit.py``, ``history.py`` and ``tokens.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import structlog
from aiohttp import web

from connectors.sdk import Connector, ConnectorSettings, DeliveryResult, ProviderRequest, Route
from connectors.sdk.metrics import Metrics
from connectors.sdk.publish import InboundPublisher
from events.model import Channel, DeliverReply, InboundMessage

from . import tokens
from .history import ChatHistory, HistoryUnavailable
from .inbound import Inbound, bearer_claims
from .live import Client, LivePush, Watch
from .origins import origin_allowed, parse_origins
from .part import Shared
from .ratelimit import RateLimiter
from .sessions import SessionEndpoints
from .settings import DAY, ChatSettings, check, session_secrets
from .websocket import WebSocketEndpoint

__all__ = ["ChatSettings", "Client", "WebChatConnector"]  # Client: the tests' handle on one socket

log = structlog.get_logger("relaydesk.connector.chat")


def history_max_age(settings: ChatSettings) -> float:
    """How long a visitor's history is kept (s): ``history_max_age``, and no longer than the
    deployment keeps message text (``message_days``, ``[retention]``). Found by a retention
    audit: the history kept every chat message 30 days whatever ``message_days`` said."""
    if settings.message_days > 0:
        return min(settings.history_max_age, settings.message_days * DAY)
    return settings.history_max_age


class WebChatConnector(Connector):
    name: ClassVar[str] = "chat"
    channel: ClassVar[Channel] = "chat"
    provider: ClassVar[str] = "webchat"
    Settings: ClassVar[type[ConnectorSettings]] = ChatSettings
    inbound_paths: ClassVar[tuple[str, ...]] = ("/messages",)
    notices: ClassVar[frozenset[str]] = frozenset({"resolved"})

    settings: ChatSettings
    publisher: InboundPublisher  # from attach(): the runtime's inbound publisher
    metrics: Metrics

    def __init__(self, settings: ConnectorSettings) -> None:
        assert isinstance(settings, ChatSettings)
        super().__init__(settings)
        check(settings)
        self.origins = parse_origins(settings.allowed_origins)
        self.history = ChatHistory(
            stream=settings.history_stream,
            prefix=settings.history_subject,
            max_frames=settings.history_frames,
            max_age=history_max_age(settings),
            max_bytes=settings.history_bytes,
            replicas=settings.history_replicas or settings.replicas,
            dedupe_window=settings.history_dedupe_window,
            timeout=settings.ack_timeout,
        )
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.log = log.bind(connector=self.name, channel=self.channel)
        shared = Shared(settings, self.origins, self.history, self.log)
        self.live = LivePush(shared)
        self.inbound = Inbound(shared, self.limiter, channel=self.channel, provider=self.provider)
        self.sessions = SessionEndpoints(shared)
        self.websocket = WebSocketEndpoint(shared, self.live, self.inbound)

    @property
    def watches(self) -> dict[str, Watch]:
        """The addresses with a socket on this instance, and their live subscriptions."""
        return self.live.watches

    @property
    def sockets(self) -> set[web.WebSocketResponse]:
        """The open sockets of this instance."""
        return set(self.websocket.sockets)

    # -- routes ---------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        out = [
            Route("POST", "/messages", handler=self.inbound.post_message),
            Route("OPTIONS", "/messages", handler=self.sessions.preflight, verify=False),
            Route("POST", "/sessions", handler=self.sessions.create, verify=False),
            Route("OPTIONS", "/sessions", handler=self.sessions.preflight, verify=False),
            Route("GET", "/ws", handler=self.websocket.handle, verify=False),
            Route("GET", "/widget.js", handler=self.sessions.widget, verify=False),
        ]
        if self.settings.demo_page:
            out.append(Route("GET", "/", handler=self.sessions.demo, verify=False))
        return out

    def origin_allowed(self, origin: str, request: ProviderRequest) -> bool:
        return origin_allowed(self.origins, origin, request)

    # -- inbound: POST /messages (socket messages take the same path, see inbound.py) -------

    def verify(self, request: ProviderRequest) -> None:
        bearer_claims(request, session_secrets(self.settings))

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return [self.inbound.message(bearer_claims(request, session_secrets(self.settings)), request.json())]

    # -- outbound -------------------------------------------------------------------------

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        if not tokens.valid_address(reply.contact):
            return DeliveryResult.failed("contact is not a web chat address")
        if reply.notice == "resolved":
            return await self._closed(reply)
        sender_name = reply.metadata.get("agent_name", "")
        try:
            text = with_file_links(reply)
            frame, new = await self.history.append(reply.contact, "reply", reply.reply_id, text, sender_name)
        except HistoryUnavailable as err:
            self.log.warning("chat.reply_not_stored", reply_id=reply.reply_id, reason=str(err))
            return DeliveryResult.failed("chat history unavailable", retryable=True)
        # Every instance holding a socket of the contact pushes it (the stream's live copy).
        # Once per reply: at debug (the outcome is on the log as MessageSent).
        self.log.debug("chat.reply_stored", reply_id=reply.reply_id, seq=frame.seq, new=new)
        return DeliveryResult.sent(f"{self.history.epoch}-{frame.seq}")

    async def _closed(self, reply: DeliverReply) -> DeliveryResult:
        """The conversation was resolved: one ``closed`` frame per conversation (the history's
        dedupe window, a day, makes the API's repeats and redeliveries one frame)."""
        try:
            frame, new = await self.history.append(reply.contact, "closed", reply.conversation_id, "")
        except HistoryUnavailable as err:
            self.log.warning("chat.closed_not_stored", conversation_id=reply.conversation_id, reason=str(err))
            return DeliveryResult.failed("chat history unavailable", retryable=True)
        self.log.debug("chat.closed_stored", conversation_id=reply.conversation_id, seq=frame.seq, new=new)
        return DeliveryResult.sent(f"{self.history.epoch}-{frame.seq}")

    # -- lifecycle ------------------------------------------------------------------------

    def attach(self, nc: Any, publisher: Any = None, metrics: Any = None) -> None:
        super().attach(nc, publisher, metrics)
        self.history.js = nc.jetstream(timeout=self.settings.ack_timeout)
        self.live.nc = nc
        if publisher is not None:
            self.inbound.publisher = publisher
        if metrics is not None:
            self.inbound.metrics = self.websocket.metrics = self.sessions.metrics = metrics

    async def startup(self) -> None:
        """Create (or update) the history stream, idempotently: every instance does it."""
        if getattr(self, "nc", None) is None or getattr(self, "publisher", None) is None:
            raise RuntimeError("chat: run the connector in a ConnectorRuntime (attach gives it NATS)")
        self.websocket.closing = False
        try:
            await self.history.ensure()
        except HistoryUnavailable as err:
            raise RuntimeError(f"chat: cannot set up the history stream: {err}") from err
        self.log.info("chat.history_ready", stream=self.history.stream, epoch=self.history.epoch)
        self.live.start()

    async def stopping(self) -> None:
        """Refuse new sockets and close every open one (1001: the widget reconnects, to another
        instance or after the restart), those still authenticating included. The runtime calls
        this before the HTTP server's cleanup, which would otherwise wait for the handlers."""
        await self.websocket.close_all()

    async def shutdown(self) -> None:
        await self.stopping()
        await self.live.close()


def with_file_links(reply: DeliverReply) -> str:
    """The reply's text with one line per file: its name and its signed link (the widget
    turns links into anchors; the link is valid for days, see services.api.uploads)."""
    lines = [f"📎 {a.name or 'file'}: {a.url}" for a in reply.attachments if a.url]
    return "\n".join([reply.text, *lines] if reply.text.strip() else lines)
