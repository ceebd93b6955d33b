"""Hostile clients on real sockets (raw asyncio streams) against a real connector and nats-server:
a client that stops reading, one address opening socket after socket, an after_seq past any
sequence (found by the hostile-client audit, 2026-12-07)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import uuid

import pytest
from websockets.asyncio.client import connect

from connectors.chat import cutoff, live, tokens
from connectors.chat.connector import WebChatConnector
from connectors.chat.protocol import CLOSE_TRY_LATER, MAX_SEQ, after_seq
from connectors.sdk import runtime as runtime_module
from connectors.sdk.runtime import ConnectorRuntime
from events.model import DeliverReply

from .conftest import StartChat
from .helpers import SECRET, SITE, chat_socket, open_session, recv, recv_until, ws_url

pytestmark = pytest.mark.integration


def reply_to(address: str, text: str) -> DeliverReply:
    return DeliverReply(
        conversation_id="conv_" + uuid.uuid4().hex[:12],
        customer_id="cus_" + uuid.uuid4().hex[:12],
        channel="chat",
        reply_id="rep_" + uuid.uuid4().hex[:12],
        contact=address,
        text=text,
    )


def connector(runtime: ConnectorRuntime) -> WebChatConnector:
    assert isinstance(runtime.connector, WebChatConnector)
    return runtime.connector


def masked(payload: bytes, opcode: int = 1) -> bytes:
    """One client frame (clients mask theirs), payload under 64 KiB."""
    key = os.urandom(4)
    size = struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) if len(payload) < 126 else None
    if size is None:
        size = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, len(payload))
    return size + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def deaf_socket(url: str, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An authenticated socket with a small receive buffer, whose frames nobody will read."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {SITE}\r\n\r\n".encode()
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    writer.write(masked(json.dumps({"type": "auth", "token": token}).encode()))
    return reader, writer


async def wait_for(condition: object, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


def cut_count(reason: str) -> float:
    return cutoff.SOCKETS_CUT.labels(reason=reason)._value.get()


async def test_a_client_that_stops_reading_is_cut_off_and_others_are_served(
    start_chat: StartChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp's send and close wait for the transport without a deadline: the 4429 close of a
    client that reads nothing never completed, and the socket, its frames queued in the kernel
    and the process (megabytes each) and its reading of the client's frames stayed for ever."""
    monkeypatch.setattr(live, "SEND_QUEUE_BYTES", 256 * 1024)
    monkeypatch.setattr(cutoff, "CLOSE_TIMEOUT", 0.5)
    runtime, url = await start_chat()
    chat = connector(runtime)
    _, deaf = await open_session(url)
    _, polite = await open_session(url)
    deaf_address = tokens.visitor_address(SECRET, deaf["visitor_id"])
    before = sum(cut_count(r) for r in ("too_slow", "send_timeout", "close_timeout"))
    reader, writer = await deaf_socket(url, deaf["token"])
    try:
        await wait_for(lambda: deaf_address in chat.watches)
        async with chat_socket(url, polite["token"]) as (ws, _):
            text = "x" * 32_000
            for _ in range(2000):  # far more than the kernel, the transport and the outbox hold
                if deaf_address not in chat.watches:
                    break
                await chat.deliver(reply_to(deaf_address, text))
            await wait_for(lambda: len(chat.sockets) == 1)  # only the polite one is left
            assert sum(cut_count(r) for r in ("too_slow", "send_timeout", "close_timeout")) > before
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv_until(ws, "pong"))["type"] == "pong"
        # The connection itself is gone (aborted), not only the server's record of it.
        async with asyncio.timeout(15):
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                while True:
                    if not await reader.read(1 << 16):
                        raise asyncio.IncompleteReadError(b"", None)
    finally:
        writer.transport.abort()


async def test_stop_with_a_socket_that_takes_nothing_does_not_wait_on_it(
    start_chat: StartChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing every socket at stop waited for ever on one whose client reads nothing."""
    monkeypatch.setattr(cutoff, "CLOSE_TIMEOUT", 0.5)
    monkeypatch.setattr(cutoff, "SEND_TIMEOUT", 3600.0)  # only the close's deadline cuts it here
    runtime, url = await start_chat()
    chat = connector(runtime)
    _, deaf = await open_session(url)
    address = tokens.visitor_address(SECRET, deaf["visitor_id"])
    _reader, writer = await deaf_socket(url, deaf["token"])
    try:
        await wait_for(lambda: address in chat.watches)
        [client] = chat.watches[address].clients
        for _ in range(400):  # until the writer waits on a transport the client does not drain
            await chat.deliver(reply_to(address, "y" * 32_000))
            if client.outbox.qsize() > 5:
                break
        assert client.outbox.qsize() > 5
        async with asyncio.timeout(30):  # without a deadline on the close: for ever
            await runtime.stop()
        assert chat.sockets == set()
    finally:
        writer.transport.abort()


async def test_one_visitor_holds_at_most_sockets_per_address(
    start_chat: StartChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One token opened 1,000 sockets in a second, each taking every frame of the address."""
    monkeypatch.setattr(live, "SOCKETS_PER_ADDRESS", 2)
    runtime, url = await start_chat()
    chat = connector(runtime)
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    before = cut_count("too_many_sockets")
    async with chat_socket(url, session["token"]) as (tab1, _), chat_socket(url, session["token"]) as (tab2, _):
        async with connect(ws_url(url), origin=SITE, open_timeout=5) as third:  # type: ignore[arg-type]
            await third.send(json.dumps({"type": "auth", "token": session["token"]}))
            async with asyncio.timeout(10):
                await third.wait_closed()
            assert third.close_code == CLOSE_TRY_LATER
            assert "sockets" in (third.close_reason or "")
        assert cut_count("too_many_sockets") == before + 1
        # Two tabs are fine: the reply reaches both, once.
        await chat.deliver(reply_to(address, "to both tabs"))
        for tab in (tab1, tab2):
            frame = await recv_until(tab, "reply")
            assert frame["text"] == "to both tabs"
        assert len(chat.watches[address].clients) == 2


async def test_after_seq_past_any_sequence_is_nothing_to_replay(chat: tuple[ConnectorRuntime, str]) -> None:
    """A resume with a 4,000-digit after_seq went to NATS as is: a bad request, answered
    'history unavailable; resume again' (and the widget would have resumed for ever)."""
    assert after_seq("9" * 4000, "", "e") == MAX_SEQ
    assert after_seq(10**30, "", "e") == MAX_SEQ
    _, url = chat
    _, session = await open_session(url)
    async with chat_socket(url, session["token"]) as (ws, _):
        await ws.send('{"type":"resume","after_seq":' + "9" * 4000 + "}")
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_a_connection_that_says_nothing_is_closed_and_a_socket_is_not_idle(
    start_chat: StartChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp keeps a connection with no request for 3,630 s: 200 silent ones (or a request
    head sent a byte at a time) held the chat port's descriptors for an hour."""
    monkeypatch.setattr(runtime_module, "IDLE_CONNECTION_TIMEOUT", 1.0)
    _, url = await start_chat()
    host, port = url.removeprefix("http://").split(":")
    silent = await asyncio.open_connection(host, int(port))
    slow = await asyncio.open_connection(host, int(port))
    slow[1].write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    _, session = await open_session(url)
    loop = asyncio.get_running_loop()
    try:
        async with chat_socket(url, session["token"]) as (ws, _):
            opened = loop.time()
            for reader, _ in (silent, slow):
                async with asyncio.timeout(15):
                    while await reader.read(1 << 16):
                        pass  # until the server closes it
            # A socket is served past the idle timeout: it is not idle, it is being served.
            while loop.time() - opened < 3 * runtime_module.IDLE_CONNECTION_TIMEOUT:
                await ws.send(json.dumps({"type": "ping"}))
                assert await recv_until(ws, "pong") == {"type": "pong"}
    finally:
        for _, writer in (silent, slow):
            writer.transport.abort()
