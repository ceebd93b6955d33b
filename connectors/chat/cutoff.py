"""Cutting off a socket whose client does not take what is sent to it.

aiohttp's ``send_*`` and ``close`` wait for the transport to drain, without a deadline: a
client that stops reading (a hostile one, or a laptop closed mid-chat behind a NAT that keeps the
connection) left a send waiting forever, and a close too (``close`` drains before it gives up),
so the 4429 "too slow" close never completed, the socket kept reading and publishing the client's
frames, the kernel and the transport kept megabytes queued for it, and a shutdown with such a
socket open waited on it for ever (found by a hostile-client audit, 2026-12-07). Here every
send and every close the server makes has a deadline, past which the connection is aborted
(its buffers dropped), logged and counted in ``relaydesk_chat_sockets_cut_total{reason}``.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from prometheus_client import Counter

from events.skips import skipping

log = structlog.get_logger("relaydesk.connector.chat")

# A frame the client has not taken within SEND_TIMEOUT (s) cuts it off (aiohttp waits for the
# transport to drain after each 64 KiB written: a client reading 6 KiB/s keeps up); a close
# frame not taken within CLOSE_TIMEOUT (s) aborts the connection.
SEND_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0

SOCKETS_CUT = Counter(
    "relaydesk_chat_sockets_cut_total",
    "Web chat sockets the server cut off, by reason (too_slow: more queued for it than a socket "
    "may hold; send_timeout: a frame not taken in time; close_timeout: a close not taken in time; "
    "too_many_sockets: over the sockets one address may hold on an instance)",
    ["reason"],
)


def cut(reason: str, **context: object) -> None:
    """Say and count that a socket is cut off (never its address or what it sent)."""
    log.warning("socket.cut_off", reason=reason, **context)
    SOCKETS_CUT.labels(reason=reason).inc()


def abort(transport: asyncio.BaseTransport | None, reason: str) -> None:
    """Drop the connection and what is queued for it (``close`` would wait to send it)."""
    cut(reason)
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()  # idempotent: a connection lost already stays lost


async def close_within(
    ws: web.WebSocketResponse,
    transport: asyncio.BaseTransport | None,
    code: int,
    reason: bytes = b"",
    *,
    timeout: float | None = None,
) -> None:
    """Close ``ws`` with ``code``; if the client does not take the close frame (and answer it)
    within ``CLOSE_TIMEOUT``, abort the connection."""
    with skipping("chat.socket_close"):  # a connection gone already
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT if timeout is None else timeout):
                await ws.close(code=code, message=reason)
        except TimeoutError:
            abort(transport, "close_timeout")
