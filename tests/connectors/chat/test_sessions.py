"""Sessions, the identity JWT of logged-in users, the static files, settings and the pure parts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import aiohttp
import jwt
import pytest
import websockets
from nats.aio.client import Client as NATS
from websockets.asyncio.client import connect

from connectors.chat import tokens
from connectors.chat.connector import WebChatConnector
from connectors.chat.history import ChatHistory, Frame, RateLimiter
from connectors.sdk import ConnectorConfigError, registry
from connectors.sdk.runtime import ConnectorRuntime

from .conftest import StartChat
from .helpers import (
    JWT_SECRET,
    SECRET,
    SITE,
    WIDGET_KEY,
    chat_config,
    chat_socket,
    identity_jwt,
    inbound_for,
    open_session,
    recv,
    ws_url,
)


def test_registry_loads_chat() -> None:
    assert registry.load("chat") is WebChatConnector


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"session_secret": ""}, "session_secret is required"),
        ({"session_secret": "short"}, "session_secret is required"),
        ({"widget_key": ""}, "widget_key is required"),
        ({"token_ttl": 7200}, "token_ttl"),
        ({"identity_jwt_secret": "short"}, "identity_jwt_secret must be at least 32"),
    ],
)
def test_settings_that_cannot_work_are_refused(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(ConnectorConfigError, match=needle):
        WebChatConnector.from_config(chat_config(**overrides))


def test_settings_from_the_environment() -> None:
    connector = WebChatConnector.from_config(
        chat_config(allowed_origins="https://a.example, https://B.example/", port="9000", rate_limit_per_minute="5")
    )
    assert connector.origins == {"https://a.example", "https://b.example"}
    assert connector.settings.port == 9000 and connector.limiter.per_minute == 5
    defaults = WebChatConnector.from_config({"widget_key": "k", "session_secret": SECRET}).settings
    assert (defaults.host, defaults.port, defaults.token_ttl, defaults.max_message_bytes) == (
        "127.0.0.1",
        8083,
        300.0,
        4096,
    )


# -- identity JWT ---------------------------------------------------------------------------


@pytest.mark.integration
async def test_logged_in_user_is_identified_by_the_jwt_subject(chat: tuple[ConnectorRuntime, str], nc: NATS) -> None:
    _, url = chat
    token = identity_jwt("user-42", name="Ada", email="ada@example.com", email_verified=True)
    status, session = await open_session(url, identity_token=token)
    assert status == 200 and session["identified"] is True
    async with chat_socket(url, session["token"]) as (ws, _):
        await ws.send(json.dumps({"type": "message", "client_msg_id": "j1", "text": "logged in"}))
        ack = await recv(ws)
        assert ack["type"] == "ack"
    [event] = await inbound_for(nc.jetstream(), "user:user-42")
    assert event.message.sender_name == "Ada"
    assert event.message.metadata["verified_email"] == "ada@example.com"
    assert event.message.metadata["visitor"] == "user"
    # Another device of the same user (another visitor id) is the same address.
    status, other = await open_session(url, identity_token=identity_jwt("user-42"))
    assert status == 200 and other["visitor_id"] != session["visitor_id"] and other["last_seq"] == ack["seq"]


@pytest.mark.integration
async def test_unverified_email_is_not_passed_on(chat: tuple[ConnectorRuntime, str], nc: NATS) -> None:
    _, url = chat
    _, session = await open_session(url, identity_token=identity_jwt("user-43", email="x@example.com"))
    async with chat_socket(url, session["token"]) as (ws, _):
        await ws.send(json.dumps({"type": "message", "client_msg_id": "j2", "text": "hi"}))
        assert (await recv(ws))["type"] == "ack"
    [event] = await inbound_for(nc.jetstream(), "user:user-43")
    assert "verified_email" not in event.message.metadata


@pytest.mark.integration
@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (identity_jwt(lifetime=-120), "identity token expired"),
        (
            identity_jwt(secret="not-the-site-secret-0123456789abcd-0123456789-0123456789"),
            "identity token signature invalid",
        ),
        (identity_jwt(lifetime=2 * 3600), "identity token lifetime over 1 h"),
        (jwt.encode({"sub": "u"}, JWT_SECRET, algorithm="HS256"), "identity token lacks the 'exp' claim"),
        (
            jwt.encode({"exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256"),
            "identity token lacks the 'sub' claim",
        ),
        (
            jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS384"),
            "identity token algorithm not allowed (HS256 only)",
        ),
        ("not.a.jwt", "identity token malformed"),
    ],
)
async def test_bad_identity_jwt_is_401_with_a_reason(
    chat: tuple[ConnectorRuntime, str], token: str, reason: str
) -> None:
    _, url = chat
    status, body = await open_session(url, identity_token=token)
    assert (status, body) == (401, {"error": reason})


@pytest.mark.integration
async def test_identity_jwt_refused_when_not_configured(start_chat: StartChat) -> None:
    _, url = await start_chat(identity_jwt_secret="")
    status, body = await open_session(url, identity_token=identity_jwt())
    assert (status, body["error"]) == (401, "identity tokens are not enabled on this chat server")


async def test_new_visitors_from_one_address_are_limited_and_returning_ones_never(start_chat: StartChat) -> None:
    """Found by an audit: a script minting visitor ids opened 300 sessions and conversations
    in 0.7 s from one address, flooding the agents' queue."""
    runtime, url = await start_chat(new_visitors_per_minute=3, client_address_header="X-Forwarded-For")
    visitors = []
    for _ in range(3):
        status, body = await open_session(url)
        assert status == 200, body
        visitors.append(body["visitor_id"])
    status, body = await open_session(url)
    assert status == 429 and body["retryable"] is True and body["retry_after"] >= 1, body
    assert body["error"].startswith("too many new visitors from one address: 3 a minute"), body
    for visitor_id in visitors:  # reloading the page: the same visitors, not new ones
        assert (await open_session(url, visitor_id=visitor_id))[0] == 200
    # Behind a proxy, the address it appended is the client: another client is not held back;
    # what a client wrote in the header itself (the first values) is not taken.
    headers = {"Origin": SITE, "X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/sessions", json={"widget_key": WIDGET_KEY}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        headers["X-Forwarded-For"] = "198.51.100.7, 127.0.0.1"
        async with http.post(url + "/sessions", json={"widget_key": WIDGET_KEY}, headers=headers) as resp:
            assert resp.status == 429
    assert runtime.metrics.rejected_by_reason["new_visitor_limit"] == 2


async def test_sessions_from_one_address_are_limited_returning_visitors_too(start_chat: StartChat) -> None:
    """Found by a security audit: a returning visitor's session (a known visitor_id) was never
    limited, and each costs a read of the history: one client could send reads without end."""
    runtime, url = await start_chat(
        sessions_per_minute=3, new_visitors_per_minute=0, client_address_header="X-Forwarded-For"
    )
    status, body = await open_session(url)
    assert status == 200, body
    for _ in range(2):
        assert (await open_session(url, visitor_id=body["visitor_id"]))[0] == 200
    status, refused = await open_session(url, visitor_id=body["visitor_id"])
    assert status == 429 and refused["retryable"] is True and refused["retry_after"] >= 1, refused
    assert refused["error"].startswith("too many sessions from one address: 3 a minute"), refused
    headers = {"Origin": SITE, "X-Forwarded-For": "203.0.113.9"}  # another client is not held back
    async with aiohttp.ClientSession() as http:
        payload = {"widget_key": WIDGET_KEY, "visitor_id": body["visitor_id"]}
        async with http.post(url + "/sessions", json=payload, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
    assert runtime.metrics.rejected_by_reason["session_limit"] == 1


# -- HTTP details ---------------------------------------------------------------------------


@pytest.mark.integration
async def test_cors_preflight_and_headers(chat: tuple[ConnectorRuntime, str]) -> None:
    _, url = chat
    async with aiohttp.ClientSession() as http:
        headers = {"Origin": SITE, "Access-Control-Request-Method": "POST"}
        async with http.options(url + "/sessions", headers=headers) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == SITE
        async with http.options(url + "/sessions", headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
        body = {"widget_key": WIDGET_KEY}
        async with http.post(url + "/sessions", json=body, headers={"Origin": SITE}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == SITE
            assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.integration
async def test_demo_page_and_widget_are_served(chat: tuple[ConnectorRuntime, str]) -> None:
    _, url = chat
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/widget.js") as resp:
            assert resp.status == 200 and resp.content_type == "application/javascript"
            assert "RelaydeskChat" in await resp.text()
        async with http.head(url + "/widget.js") as resp:  # CDNs and uptime checks ask HEAD (was 405)
            assert resp.status == 200 and resp.content_type == "application/javascript"
        async with http.get(url + "/") as resp:
            page = await resp.text()
            assert resp.status == 200 and f"var WIDGET_KEY = {json.dumps(WIDGET_KEY)};" in page
            policy = resp.headers["Content-Security-Policy"]  # as the console's (there was none)
            assert "frame-ancestors 'none'" in policy and "script-src 'self' 'nonce-" in policy
            nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
            assert f'<script nonce="{nonce}">' in page and resp.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(url + "/ws") as resp:
            assert resp.status == 400  # a plain GET is not an upgrade


@pytest.mark.integration
async def test_stop_with_open_sockets_is_prompt(nc: NATS) -> None:
    """The runtime calls ``stopping()`` before its HTTP cleanup: open sockets, and one still
    authenticating, are closed with 1001 at once (not after auth_timeout or shutdown_timeout)."""
    connector = WebChatConnector.from_config(chat_config(outbound=False, auth_timeout=30))
    runtime = ConnectorRuntime(connector, nc)
    [url, *_] = await runtime.start()
    _, session = await open_session(url)
    async with (
        connect(ws_url(url), origin=SITE) as ws,  # type: ignore[arg-type]
        connect(ws_url(url), origin=SITE) as unauthenticated,  # type: ignore[arg-type]
    ):
        await ws.send(json.dumps({"type": "auth", "token": session["token"]}))
        assert (await recv(ws))["type"] == "ready"
        started = time.monotonic()
        await runtime.stop()
        assert time.monotonic() - started < 2.0
        for sock in (ws, unauthenticated):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(sock.recv(), 3)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert connector.watches == {} and connector.sockets == set()


@pytest.mark.integration
async def test_auth_frame_must_come_in_time(start_chat: StartChat) -> None:
    _, url = await start_chat(auth_timeout=0.3)
    async with connect(ws_url(url)) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4408, "auth frame not received in time")


# -- pure parts -----------------------------------------------------------------------------


def test_session_token_round_trip_and_tampering() -> None:
    claims = tokens.SessionClaims("user:7", int(time.time()) + 60, "Ada Lovelace", "ada@example.com")
    token = tokens.issue_token(SECRET, claims)
    assert tokens.verify_token(SECRET, token) == claims
    # The claims are sealed: the visitor's name and email are not readable from the token.
    head, body = token.split(".")
    assert head == "v2"
    readable = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert b"Ada" not in readable and b"ada@example.com" not in readable and b"user:7" not in readable
    altered = bytearray(readable)
    altered[-1] ^= 1
    with pytest.raises(tokens.TokenError, match="signature invalid"):
        tokens.verify_token(SECRET, f"v2.{base64.urlsafe_b64encode(bytes(altered)).decode().rstrip('=')}")
    with pytest.raises(tokens.TokenError, match="signature invalid"):
        tokens.verify_token(SECRET + "x", token)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify_token(SECRET, token, now=claims.expires)
    for malformed in ("v2.", "v2.!!!", "v2.AAAA", "v3.abc", f"{token}.extra"):
        with pytest.raises(tokens.TokenError, match="malformed"):
            tokens.verify_token(SECRET, malformed)


def test_a_signed_v1_token_issued_before_an_upgrade_holds_until_it_expires() -> None:
    payload = base64.urlsafe_b64encode(b'{"a":"user:7","x":%d,"n":"Ada"}' % (int(time.time()) + 60))
    signed = "v1." + payload.decode().rstrip("=")
    mac = hmac.new(SECRET.encode(), b"session-token\0" + signed.encode(), hashlib.sha256).digest()
    token = f"{signed}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    assert tokens.verify_token(SECRET, token).name == "Ada"
    with pytest.raises(tokens.TokenError, match="signature invalid"):
        tokens.verify_token(SECRET + "x", token)


def test_addresses_and_message_ids() -> None:
    visitor = tokens.new_visitor_id()
    assert tokens.VISITOR_ID.fullmatch(visitor) and len(visitor) * 6 >= 128
    address = tokens.visitor_address(SECRET, visitor)
    assert address == tokens.visitor_address(SECRET, visitor) != tokens.visitor_address(SECRET + "x", visitor)
    assert visitor not in address and tokens.valid_address(address)
    assert tokens.valid_address("user:abc") and not tokens.valid_address("+15551234567")
    pmid = tokens.provider_message_id(address, "m1")
    assert pmid == tokens.provider_message_id(address, "m1") != tokens.provider_message_id(address, "m2")
    assert visitor not in pmid and address not in pmid


@pytest.mark.integration
async def test_history_stream_is_bounded_per_address_deduped_and_keeps_its_epoch(nc: NATS, uid: str) -> None:
    history = ChatHistory(stream=f"T_CHAT_{uid}", prefix=f"t.chat.{uid}", max_frames=3, js=nc.jetstream())
    try:
        await history.ensure()
        epoch = history.epoch
        assert len(epoch) == 12
        frames = [(await history.append("user:a", "message", f"k{i}", f"t{i}"))[0] for i in range(5)]
        seqs = [f.seq for f in frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        assert [f.seq for f in await history.read("user:a", 0)] == seqs[2:]  # 3 kept per address
        again, new = await history.append("user:a", "message", "k4", "t4")
        assert (again.seq, new) == (seqs[4], False)  # a resend is the first frame
        other, _ = await history.append("user:b", "reply", "r1", "for b", "Ann")
        assert other.seq > seqs[4] and await history.last_seq("user:a") == seqs[4]
        assert [f.key for f in await history.read("user:a", seqs[2])] == ["k3", "k4"]
        assert [f.seq for f in await history.read("user:a", 0, upto=seqs[3])] == seqs[2:4]
        [read] = await history.read("user:b", 0)
        assert read.to_json() == {
            "type": "reply",
            "seq": other.seq,
            "text": "for b",
            "at": read.at.isoformat(),
            "reply_id": "r1",
            "from": "Ann",
        }
        assert await history.last_seq("user:nobody") == 0 and await history.read("user:nobody", 0) == []
        # The address is never in a subject (a user address carries the site's user id).
        assert "user" not in history.subject("user:a") and history.subject("user:a") != history.subject("user:b")
        # Idempotent: a second instance (or a restart) finds the stream and the same epoch.
        twin = ChatHistory(stream=history.stream, prefix=history.prefix, max_frames=3, js=nc.jetstream())
        await twin.ensure()
        assert twin.epoch == epoch and [f.seq for f in await twin.read("user:a", 0)] == seqs[2:]
    finally:
        await nc.jetstream().delete_stream(history.stream)


def test_frame_round_trip() -> None:
    frame = Frame(7, "message", "c1", "héllo", datetime.now(UTC))
    assert Frame.decode(7, frame.encode()) == frame
    assert frame.to_json()["client_msg_id"] == "c1" and "from" not in frame.to_json()


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(per_minute=2)
    assert limiter.take("a", now=0) == 0 and limiter.take("a", now=0) == 0
    wait = limiter.take("a", now=0)
    assert wait == pytest.approx(30.0) and limiter.take_wait("a", now=0) == pytest.approx(30.0)
    assert limiter.take("b", now=0) == 0
    assert limiter.take("a", now=30.0) == 0
