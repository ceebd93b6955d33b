"""``GET /ws``: the socket protocol (``connectors/chat/README.md``). The first frame
authenticates; then the socket reads client frames, sends visitor messages through
``Inbound.accept`` one at a time, and writes what ``LivePush`` and the answers queue for it."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aiohttp import WSMsgType, web

from connectors.sdk import ConnectorError, Malformed, ProviderRequest, TooLarge, Unauthentic, Unavailable
from connectors.sdk.metrics import Metrics
from events.stopping import cancel_all_and_wait

from . import cutoff, tokens
from .cutoff import close_within
from .history import HistoryUnavailable
from .inbound import Inbound
from .language import HINT_FIELDS
from .live import Client, Limited, LivePush
from .origins import origin_allowed, refused
from .part import ChatPart, Shared
from .protocol import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_BAD_FRAME,
    CLOSE_GOING_AWAY,
    CLOSE_TRY_LATER,
    CLOSE_UNAUTHORIZED,
    after_seq,
    error_frame,
    json_object,
)
from .ratelimit import RateLimited
from .settings import session_secrets

PENDING_MESSAGES = 100
_REJECT_KIND: dict[type[ConnectorError], str] = {
    Unauthentic: "authenticity",
    Malformed: "malformed",
    TooLarge: "too_large",
}


class WebSocketEndpoint(ChatPart):
    """The open sockets of this instance (``stopping`` closes them all)."""

    metrics: Metrics  # from the connector's attach()

    def __init__(self, shared: Shared, live: LivePush, inbound: Inbound) -> None:
        super().__init__(shared)
        self.live = live
        self.inbound = inbound
        # The open sockets and their connections (to abort one that takes nothing).
        self.sockets: dict[web.WebSocketResponse, asyncio.BaseTransport | None] = {}
        self.closing = False

    async def close_all(self) -> None:
        """Refuse new sockets and close every open one with 1001, those still authenticating included."""
        self.closing = True
        await asyncio.gather(
            *(close_within(ws, t, CLOSE_GOING_AWAY, b"server going away") for ws, t in list(self.sockets.items())),
            return_exceptions=True,
        )

    async def handle(self, request: ProviderRequest) -> web.StreamResponse:
        raw = request.raw
        assert raw is not None
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(self.origins, origin, request):
            self.log.warning("socket.rejected", reason="origin not allowed")
            return refused()
        if self.closing:
            return web.json_response({"error": "server stopping"}, status=503, headers={"Retry-After": "1"})
        ws = web.WebSocketResponse(heartbeat=self.settings.heartbeat or None, max_msg_size=self.settings.max_body_bytes)
        if not ws.can_prepare(raw).ok:
            return web.json_response({"error": "WebSocket upgrade expected"}, status=400)
        self.sockets[ws] = raw.transport
        try:
            await ws.prepare(raw)
            await self._serve(ws, raw)
        finally:
            self.sockets.pop(ws, None)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, raw: web.Request) -> None:
        client, after = await self._authenticate(ws, raw)
        if client is None:
            return
        writer = asyncio.create_task(self._writer(client))
        try:
            await self.live.join(client, after)
        except HistoryUnavailable as err:
            limited = isinstance(err, Limited)
            self.log.warning("socket.limited" if limited else "socket.history_unavailable", reason=str(err))
            writer.cancel()
            reason = str(err).encode()[:120] if limited else b"history unavailable: try again later"
            await close_within(ws, client.transport, CLOSE_TRY_LATER, reason)
            return
        except BaseException:
            writer.cancel()
            raise
        self.log.info("socket.opened", sockets=len(self.sockets))
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(PENDING_MESSAGES)
        sender = asyncio.create_task(self._sender(client, inbox))
        try:
            await self._reader(client, inbox)
        finally:
            await cancel_all_and_wait((sender, writer))
            await self.live.leave(client)
            await close_within(ws, client.transport, 1000)
            self.log.info("socket.closed", code=ws.close_code)

    async def _authenticate(self, ws: web.WebSocketResponse, raw: web.Request) -> tuple[Client | None, int]:
        async def close(code: int, reason: str) -> None:
            self.log.warning("socket.auth_failed", reason=reason)
            await ws.close(code=code, message=reason.encode())

        try:
            async with asyncio.timeout(self.settings.auth_timeout):
                msg = await ws.receive()
        except TimeoutError:
            await close(CLOSE_AUTH_TIMEOUT, "auth frame not received in time")
            return None, 0
        if msg.type != WSMsgType.TEXT:
            if msg.type not in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                await close(CLOSE_BAD_FRAME, "first frame must be a JSON auth frame")
            return None, 0
        frame = json_object(msg.data)
        if frame is None or frame.get("type") != "auth":
            await close(CLOSE_BAD_FRAME, 'first frame must be {"type":"auth","token":...}')
            return None, 0
        try:
            claims = tokens.verify_token(session_secrets(self.settings), frame.get("token"))
        except tokens.TokenError as err:
            await close(CLOSE_UNAUTHORIZED, str(err))
            return None, 0
        client = Client(secrets.token_hex(8), claims.address, claims, ws, transport=raw.transport)
        after = frame.get("after_seq", raw.query.get("after_seq", "0"))
        epoch = frame.get("epoch", raw.query.get("epoch", ""))
        return client, after_seq(after, epoch, self.history.epoch)

    async def _reader(self, client: Client, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        async for msg in client.ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.BINARY:
                    client.push(error_frame("bad_frame", "frames are JSON text"))
                continue
            frame = json_object(msg.data)
            if frame is None:
                client.push(error_frame("bad_frame", "frame is not a JSON object"))
                continue
            kind = frame.get("type")
            if kind == "message":
                try:
                    inbox.put_nowait(frame)
                except asyncio.QueueFull:
                    client.push(
                        error_frame("busy", "too many messages in flight", frame, retryable=True, retry_after=1.0)
                    )
            elif kind == "resume":
                await self.live.resume(
                    client, after_seq(frame.get("after_seq"), frame.get("epoch", ""), self.history.epoch)
                )
            elif kind == "ping":
                client.push({"type": "pong"})
            elif kind == "typing":
                pass  # accepted; not forwarded to agents yet
            else:
                client.push(error_frame("bad_frame", "unknown frame type"))

    async def _writer(self, client: Client) -> None:
        """Send what is queued for the socket; a client that does not take a frame within
        ``SEND_TIMEOUT`` is cut off (aiohttp's send waits for the transport without a deadline)."""
        while True:
            data = await client.outbox.get()
            client.taken(data)
            if client.ws.closed:
                return
            try:
                async with asyncio.timeout(cutoff.SEND_TIMEOUT):
                    await client.ws.send_str(data)
            except TimeoutError:
                cutoff.abort(client.transport, "send_timeout")
                return

    async def _sender(self, client: Client, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        """Each visitor message, in order, published directly with the runtime's publisher."""
        while True:
            frame = await inbox.get()
            client.push(await self._submit(client, frame))

    async def _submit(self, client: Client, frame: dict[str, Any]) -> dict[str, Any]:
        """One socket message through ``Inbound.accept``, with the answers, metrics and logs that
        ``POST /messages`` gives (the socket stays authenticated after its token expires)."""
        body = {key: frame.get(key) for key in ("client_msg_id", "text", *HINT_FIELDS)}
        try:
            client_msg_id, seq = await self.inbound.accept(client.claims, body, origin=client.id, path="ws")
        except (Unauthentic, Malformed, TooLarge) as err:
            self.metrics.reject(_REJECT_KIND[type(err)])
            self.log.warning("inbound.rejected", path="ws", status=err.status, reason=err.reason)
            return error_frame("too_large" if isinstance(err, TooLarge) else "invalid", err.reason, frame)
        except RateLimited as err:
            wait = self.inbound.refused(client.address, err, "ws")
            return error_frame("rate_limited", err.reason, frame, retryable=True, retry_after=round(wait, 1))
        except Unavailable as err:
            self.metrics.inc("unavailable")
            self.log.warning("inbound.unavailable", path="ws", reason=err.reason)
            return _resend(frame)
        except ConnectorError as err:
            self.log.warning("inbound.error", path="ws", status=err.status, reason=err.reason)
            return error_frame("invalid", err.reason, frame)
        except Exception:
            self.log.exception("inbound.crashed", path="ws")
            return _resend(frame)
        return {"type": "ack", "client_msg_id": client_msg_id, "seq": seq}


def _resend(frame: dict[str, Any]) -> dict[str, Any]:
    """The answer to a message that was not stored: the client sends it again."""
    return error_frame("unavailable", "message not stored; send it again", frame, retryable=True, retry_after=1.0)
