"""Every API route, signed in or not, answers a body that trickles in with 408 within the
deadline (``services.api.body_deadline``): aiohttp waits for a body for ever, so a client that
sent a head with ``Content-Length`` and then nothing held a request, and its handler, for as
long as it liked (the console's sign-in reads its body before anything proves who sends it).
A body that arrives in time is served as before. Over a real nats-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connectors.sdk import http as connector_http
from services.bus.embedded import EmbeddedNats

from .helpers import API_TOKEN, agent_system, agents_config

pytestmark = pytest.mark.integration


async def _head_answered(host: str, port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(20):  # a deadline for the test, not the expected time (0.5 s)
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def test_a_body_that_trickles_in_is_408_on_every_route(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connector_http, "BODY_TIMEOUT", 0.5)
    config = agents_config(tmp_path, clean_nats.url)
    async with agent_system(config, clean_nats, services=("api",)) as s:
        host, port = config.api.host, config.api.port
        for path, auth in (
            ("/v1/session", ""),  # the console's sign-in: nobody proved who they are yet
            ("/v1/agents/ava/tokens", f"Authorization: Bearer {API_TOKEN}\r\n"),
        ):
            head = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
                "Content-Length: 100\r\n\r\n{"
            ).encode()
            answer = await _head_answered(host, port, head)
            assert answer.startswith(b"HTTP/1.1 408 "), (path, answer)
        # A body all there is served, however long the deadline is.
        status, body = await s.call("POST", "/v1/agents/ava/tokens", body={"label": "in time"})
        assert status == 201, body
