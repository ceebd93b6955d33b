"""Shared bits of the web chat tests: settings, sessions, sockets, identity JWTs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jwt
from websockets.asyncio.client import ClientConnection, connect

from connectors.sdk.conformance import read_inbound
from connectors.sdk.conformance.helpers import Published

SECRET = "test-session-secret-0123456789abcdef"
WIDGET_KEY = "wk_test_123"
JWT_SECRET = "site-backend-jwt-secret-0123456789-0123456789-0123456789"
SITE = "https://shop.example.com"


def chat_config(**extra: Any) -> dict[str, Any]:
    return {
        "port": 0,
        "widget_key": WIDGET_KEY,
        "session_secret": SECRET,
        "identity_jwt_secret": JWT_SECRET,
        "allowed_origins": [SITE],
        "ack_timeout": 1.0,
        **extra,
    }


def identity_jwt(sub: str = "user-42", *, lifetime: float = 600, secret: str = JWT_SECRET, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": int(now + lifetime), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


async def open_session(base_url: str, origin: str | None = SITE, **body: Any) -> tuple[int, dict[str, Any]]:
    payload = {"widget_key": WIDGET_KEY, **body}
    headers = {"Origin": origin} if origin else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(base_url + "/sessions", json=payload, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def ws_url(base_url: str, query: str = "") -> str:
    return base_url.replace("http://", "ws://") + "/ws" + (f"?{query}" if query else "")


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    data = await asyncio.wait_for(ws.recv(), timeout)
    frame: dict[str, Any] = json.loads(data)
    return frame


async def recv_until(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame of type ``kind`` (pongs and other kinds before it are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            if frame.get("type") == kind:
                return frame


@asynccontextmanager
async def chat_socket(
    base_url: str, token: str, *, query: str = "", origin: str | None = SITE, **auth: Any
) -> AsyncIterator[tuple[ClientConnection, dict[str, Any]]]:
    """An authenticated socket and its ``ready`` frame."""
    async with connect(ws_url(base_url, query), origin=origin, open_timeout=5) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "auth", "token": token, **auth}))
        ready = await recv(ws)
        assert ready["type"] == "ready", ready
        yield ws, ready


async def inbound_for(js: Any, sender: str, *, expect: int | None = None, timeout: float = 5.0) -> list[Published]:
    """Events on rd.inbound.chat from ``sender`` (waits until ``expect`` of them are there)."""
    async with asyncio.timeout(timeout):
        while True:
            found = [p for p in await read_inbound(js, "chat") if p.message.sender == sender]
            if expect is None or len(found) >= expect:
                return found
            await asyncio.sleep(0.05)
