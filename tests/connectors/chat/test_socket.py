"""The chat socket contract with a real client (``websockets``) over a real nats-server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import pytest
import websockets
from nats.aio.client import Client as NATS
from websockets.asyncio.client import connect

from connectors.chat import tokens
from connectors.chat.connector import Client, WebChatConnector
from connectors.sdk.conformance import wait_for_outcome
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import DeliverReply, MessageSent
from services.bus.embedded import EmbeddedNats

from .conftest import StartChat
from .helpers import (
    SECRET,
    SITE,
    chat_config,
    chat_socket,
    inbound_for,
    open_session,
    recv,
    recv_until,
    ws_url,
)

pytestmark = pytest.mark.integration


def reply_to(address: str, text: str = "An agent answers") -> DeliverReply:
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


async def test_message_is_published_once_then_acked_with_seq(chat: tuple[ConnectorRuntime, str], nc: NATS) -> None:
    runtime, url = chat
    status, session = await open_session(url)
    assert status == 200, session
    assert len(tokens.VISITOR_ID.fullmatch(session["visitor_id"])[0]) * 6 >= 128  # type: ignore[index]
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, ready):
        assert ready["last_seq"] == 0 and ready["epoch"] == session["epoch"]
        await ws.send(json.dumps({"type": "message", "client_msg_id": "m-1", "text": "Where is my parcel?"}))
        ack = await recv(ws)
        assert ack == {"type": "ack", "client_msg_id": "m-1", "seq": ack["seq"]} and ack["seq"] > 0
        # Acked means stored: the event is on the stream already.
        [event] = await inbound_for(nc.jetstream(), address)
        assert event.msg_id == "chat:" + tokens.provider_message_id(address, "m-1")
        assert (event.message.channel, event.message.provider) == ("chat", "webchat")
        assert event.message.text == "Where is my parcel?"
        assert event.message.metadata["client_msg_id"] == "m-1"

        # The same client_msg_id again (a resend after a lost ack): same seq, one event.
        await ws.send(json.dumps({"type": "message", "client_msg_id": "m-1", "text": "Where is my parcel?"}))
        assert await recv(ws) == {"type": "ack", "client_msg_id": "m-1", "seq": ack["seq"]}
        await ws.send(json.dumps({"type": "message", "client_msg_id": "m-2", "text": "Order 1234"}))
        assert (await recv(ws))["seq"] > ack["seq"]
    assert len(await inbound_for(nc.jetstream(), address, expect=2)) == 2
    assert runtime.metrics["published"] == 2 and runtime.metrics["duplicates"] == 1


async def test_resumed_visitor_keeps_its_address(chat: tuple[ConnectorRuntime, str], nc: NATS) -> None:
    _, url = chat
    _, first = await open_session(url)
    status, again = await open_session(url, visitor_id=first["visitor_id"])
    assert status == 200 and again["visitor_id"] == first["visitor_id"]
    address = tokens.visitor_address(SECRET, first["visitor_id"])
    for session, cid in ((first, "a"), (again, "b")):
        async with chat_socket(url, session["token"]) as (ws, _):
            await ws.send(json.dumps({"type": "message", "client_msg_id": cid, "text": "hi"}))
            assert (await recv_until(ws, "ack"))["client_msg_id"] == cid
    assert {e.message.metadata["client_msg_id"] for e in await inbound_for(nc.jetstream(), address, expect=2)} == {
        "a",
        "b",
    }
    status, body = await open_session(url, visitor_id="short")
    assert status == 400 and body["error"] == "visitor_id malformed"


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (
            lambda: tokens.issue_token("another-secret-0123456789abcdefghij", _claims()),
            "session token signature invalid",
        ),
        (lambda: tokens.issue_token(SECRET, _claims(expires=int(time.time()) - 1)), "session token expired"),
        (lambda: "v1.garbage", "session token malformed"),
        (lambda: "", "session token missing"),
    ],
)
async def test_bad_token_closes_the_socket_with_a_reason(
    chat: tuple[ConnectorRuntime, str], nc: NATS, make_token: object, reason: str
) -> None:
    _, url = chat
    async with connect(ws_url(url), origin=SITE) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "auth", "token": make_token()}))  # type: ignore[operator]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, reason)


def _claims(expires: int | None = None) -> tokens.SessionClaims:
    return tokens.SessionClaims("visitor:" + "0" * 32, expires or int(time.time()) + 60)


async def test_first_frame_must_be_auth(chat: tuple[ConnectorRuntime, str]) -> None:
    _, url = chat
    async with connect(ws_url(url)) as ws:
        await ws.send(json.dumps({"type": "message", "client_msg_id": "x", "text": "no auth"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


async def test_token_in_url_is_not_accepted(chat: tuple[ConnectorRuntime, str]) -> None:
    _, url = chat
    _, session = await open_session(url)
    async with connect(ws_url(url, f"token={session['token']}")) as ws:
        await ws.send(json.dumps({"type": "auth"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_disallowed_origin_is_403(chat: tuple[ConnectorRuntime, str]) -> None:
    _, url = chat
    for origin in ("https://evil.example.net", None):
        status, body = await open_session(url, origin=origin)
        assert status == 403 and body == {"error": "origin not allowed"}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(ws_url(url), origin="https://evil.example.net"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    # The server's own origin (the demo page) is allowed.
    status, _ = await open_session(url, origin=url)
    assert status == 200


async def test_bad_widget_key_is_403_and_malformed_is_400(chat: tuple[ConnectorRuntime, str]) -> None:
    _, url = chat
    status, body = await open_session(url, widget_key="wk_guess")
    assert status == 403 and body == {"error": "unknown widget key"}


async def test_reply_is_pushed_to_every_open_socket_of_the_visitor(chat: tuple[ConnectorRuntime, str]) -> None:
    runtime, url = chat
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (tab1, _), chat_socket(url, session["token"]) as (tab2, _):
        # A message from one tab shows in the other one (not echoed to the sender: it gets the ack).
        await tab1.send(json.dumps({"type": "message", "client_msg_id": "t1", "text": "from tab 1"}))
        ack = await recv(tab1)
        assert (ack["type"], ack["client_msg_id"]) == ("ack", "t1")
        echo = await recv(tab2)
        assert (echo["type"], echo["seq"], echo["client_msg_id"], echo["text"]) == (
            "message",
            ack["seq"],
            "t1",
            "from tab 1",
        )

        reply = reply_to(address, "We are on it")
        result = await connector(runtime).deliver(reply)
        assert result.ok
        epoch, _, seq = result.provider_message_id.partition("-")
        assert epoch == connector(runtime).history.epoch and int(seq) > ack["seq"]
        for tab in (tab1, tab2):
            frame = await recv(tab)
            assert (frame["type"], frame["seq"], frame["text"], frame["reply_id"]) == (
                "reply",
                int(seq),
                "We are on it",
                reply.reply_id,
            )
        # The outbound worker may hand the same reply over again: stored and pushed once.
        again = await connector(runtime).deliver(reply)
        assert again == result
        await tab1.send(json.dumps({"type": "ping"}))
        assert await recv(tab1) == {"type": "pong"}


async def test_reconnect_with_after_seq_gets_what_was_missed(chat: tuple[ConnectorRuntime, str]) -> None:
    runtime, url = chat
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, ready):
        await ws.send(json.dumps({"type": "message", "client_msg_id": "q", "text": "question"}))
        first = (await recv(ws))["seq"]
        epoch = ready["epoch"]
    # The visitor is away: replies are stored, and delivery still reports sent (queued).
    sent = []
    for text in ("first answer", "second answer"):
        result = await connector(runtime).deliver(reply_to(address, text))
        assert result.ok
        sent.append(int(result.provider_message_id.rpartition("-")[2]))
    assert first < sent[0] < sent[1]

    _, fresh = await open_session(url, visitor_id=session["visitor_id"])
    assert fresh["last_seq"] == sent[1] and fresh["epoch"] == epoch
    async with chat_socket(url, fresh["token"], query=f"after_seq={first}&epoch={epoch}") as (ws, ready):
        assert ready["last_seq"] == sent[1]
        missed = [await recv(ws), await recv(ws)]
        assert [(f["type"], f["seq"], f["text"]) for f in missed] == [
            ("reply", sent[0], "first answer"),
            ("reply", sent[1], "second answer"),
        ]
        # A resume frame replays again from any point (here: everything kept).
        await ws.send(json.dumps({"type": "resume", "after_seq": 0}))
        assert [(await recv(ws))["seq"] for _ in range(3)] == [first, *sent]
    # after_seq from another history stream (another epoch) counts as 0: nothing is skipped.
    async with chat_socket(url, fresh["token"], after_seq=sent[1], epoch="0ldepoch") as (ws, _):
        assert [(await recv(ws))["seq"] for _ in range(3)] == [first, *sent]
    # Up to date: nothing replayed, the next frame comes live.
    async with chat_socket(url, fresh["token"], after_seq=sent[1], epoch=epoch) as (ws, _):
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_replays_a_client_asks_for_are_limited_per_address(chat: tuple[ConnectorRuntime, str]) -> None:
    """Each replay reads the address's history from the stream, a request per frame kept: a
    visitor sending resume frames from 0 in a loop (or opening sockets with after_seq=0) had
    NATS read it all again each time (found by a security audit: 300 resume frames of 40 bytes
    were 9,000 stream reads). At most REPLAYS_PER_MINUTE per address are served."""
    from connectors.chat.live import REPLAYS_PER_MINUTE

    _, url = chat
    _, session = await open_session(url)
    async with chat_socket(url, session["token"]) as (ws, first):  # nothing kept yet: no replay
        await ws.send(json.dumps({"type": "message", "client_msg_id": "q", "text": "question"}))
        seq = (await recv(ws))["seq"]
        asked = REPLAYS_PER_MINUTE + 20
        for _ in range(asked):
            await ws.send(json.dumps({"type": "resume", "after_seq": 0}))
        answers = [await recv(ws) for _ in range(asked)]  # one frame kept: one frame per replay
    served = [a for a in answers if a["type"] == "message"]
    refused = [a for a in answers if a["type"] == "error"]
    assert len(served) == REPLAYS_PER_MINUTE and len(refused) == 20, answers[-3:]
    assert all(a["seq"] == seq for a in served)
    assert refused[0]["code"] == "rate_limited" and refused[0]["retryable"] and refused[0]["retry_after"] >= 1
    # A socket asking to be caught up from 0 is told to come back later (1013) …
    async with connect(ws_url(url), origin=SITE, open_timeout=5) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "auth", "token": session["token"], "after_seq": 0}))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            while True:
                assert (await recv(ws))["type"] == "ready"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert "catch-ups a minute" in closed.value.rcvd.reason
    # … while one that is up to date needs no replay and is served.
    async with chat_socket(url, session["token"], after_seq=seq, epoch=first["epoch"]) as (ws, _):
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_rate_limit_per_session(start_chat: StartChat, nc: NATS) -> None:
    _, url = await start_chat(rate_limit_per_minute=3)
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, _):
        for i in range(3):
            await ws.send(json.dumps({"type": "message", "client_msg_id": f"r{i}", "text": "spam?"}))
            assert (await recv(ws))["type"] == "ack"
        await ws.send(json.dumps({"type": "message", "client_msg_id": "r3", "text": "one too many"}))
        error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "rate_limited"
    assert error["client_msg_id"] == "r3" and error["retryable"] is True and error["retry_after"] >= 1
    assert "3 messages per minute" in error["reason"]
    assert len(await inbound_for(nc.jetstream(), address, expect=3)) == 3


async def test_size_limit_per_message(start_chat: StartChat, nc: NATS) -> None:
    _, url = await start_chat(max_message_bytes=16)
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, _):
        await ws.send(json.dumps({"type": "message", "client_msg_id": "big", "text": "é" * 9}))  # 18 bytes
        error = await recv(ws)
        assert (error["type"], error["code"], error["retryable"]) == ("error", "too_large", False)
        assert error["reason"] == "message over 16 bytes" and error["client_msg_id"] == "big"
        await ws.send(json.dumps({"type": "message", "client_msg_id": "bad id!", "text": "x"}))
        assert (await recv(ws))["code"] == "invalid"
        await ws.send("not json")
        assert (await recv(ws))["code"] == "bad_frame"
        await ws.send(json.dumps({"type": "message", "client_msg_id": "ok", "text": "short"}))
        assert (await recv(ws))["type"] == "ack"
    assert [e.message.text for e in await inbound_for(nc.jetstream(), address, expect=1)] == ["short"]


async def test_nats_down_is_a_retryable_error_then_the_resend_is_acked(
    own_nats: tuple[EmbeddedNats, NATS],
) -> None:
    server, nc = own_nats
    runtime = ConnectorRuntime(WebChatConnector.from_config(chat_config(outbound=False)), nc)
    [url, *_] = await runtime.start()
    try:
        _, session = await open_session(url)
        async with chat_socket(url, session["token"]) as (ws, _):
            await server.astop()
            await ws.send(json.dumps({"type": "message", "client_msg_id": "n1", "text": "anyone?"}))
            error = await recv(ws, timeout=10)
            assert (error["type"], error["code"], error["retryable"], error["client_msg_id"]) == (
                "error",
                "unavailable",
                True,
                "n1",
            )
            assert runtime.metrics["published"] == 0
            await server.astart()
            async with asyncio.timeout(15):
                while True:  # the widget resends after retry_after
                    await ws.send(json.dumps({"type": "message", "client_msg_id": "n1", "text": "anyone?"}))
                    frame = await recv(ws, timeout=10)
                    if frame["type"] == "ack":
                        break
                    await asyncio.sleep(0.3)
            assert frame["seq"] == 1
    finally:
        await runtime.stop()


async def test_reply_published_to_rd_out_chat_reaches_the_socket(own_nats: tuple[EmbeddedNats, NATS]) -> None:
    _, nc = own_nats
    runtime = ConnectorRuntime(WebChatConnector.from_config(chat_config(outbound=True, outbound_fetch_timeout=0.5)), nc)
    [url, *_] = await runtime.start()
    try:
        _, session = await open_session(url)
        address = tokens.visitor_address(SECRET, session["visitor_id"])
        async with chat_socket(url, session["token"]) as (ws, _):
            reply = reply_to(address, "Your parcel ships today")
            js = nc.jetstream()
            await js.publish(subjects.outbound("chat"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
            frame = await recv_until(ws, "reply", timeout=10)
            assert (frame["text"], frame["reply_id"], frame["seq"]) == (reply.text, reply.reply_id, 1)
        # Its outcome is reported on rd.inbound.chat, for intake to record.
        sent = (await wait_for_outcome(js, "chat", reply.reply_id, timeout=10)).recorded
        assert isinstance(sent, MessageSent)
        assert sent.reply_id == reply.reply_id and sent.provider_message_id.endswith("-1")
    finally:
        await runtime.stop()


async def test_a_client_that_does_not_read_is_closed_not_buffered_forever() -> None:
    closed: list[tuple[int, bytes]] = []

    class StuckSocket:
        async def close(self, *, code: int, message: bytes) -> bool:
            closed.append((code, message))
            return True

    client = Client("c1", "visitor:" + "0" * 32, _claims(), StuckSocket(), asyncio.Queue(3))  # type: ignore[arg-type]
    assert all(client.push({"type": "pong"}) for _ in range(3))
    assert client.push({"type": "pong"}) is False
    assert client.closing is not None
    await client.closing
    assert closed == [(4429, b"too slow: reconnect with after_seq")]
    assert client.push({"type": "pong"}) is False  # nothing more is queued for it


async def test_text_that_is_not_text_or_shows_nothing_is_refused_once_not_retried(
    start_chat: StartChat, nc: NATS
) -> None:
    """Found by an audit: half an emoji (a lone UTF-16 surrogate) crashed the size check and
    was answered "unavailable, send it again", so the widget resent it for ever; a message of
    zero-width spaces opened a conversation agents saw as blank."""
    _, url = await start_chat()
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, _):
        await ws.send(json.dumps({"type": "message", "client_msg_id": "half", "text": "broken \ud83d emoji"}))
        error = await recv(ws)
        assert (error["code"], error["retryable"], error["client_msg_id"]) == ("invalid", False, "half"), error
        assert "lone UTF-16 surrogate" in error["reason"]
        await ws.send(json.dumps({"type": "message", "client_msg_id": "zw", "text": "\u200b\u200d\ufeff \u2060"}))
        error = await recv(ws)
        assert (error["code"], error["retryable"], error["client_msg_id"]) == ("invalid", False, "zw"), error
        await ws.send(json.dumps({"type": "message", "client_msg_id": "ok", "text": "\u200bvisible 👍"}))
        assert (await recv(ws))["type"] == "ack"
    headers = {"Authorization": f"Bearer {session['token']}", "Origin": SITE, "Content-Type": "application/json"}
    body = json.dumps({"client_msg_id": "half2", "text": "\udc00"}).encode()  # ASCII JSON, an escaped surrogate
    async with aiohttp.ClientSession() as http, http.post(url + "/messages", data=body, headers=headers) as resp:
        assert resp.status == 400, await resp.text()
        assert "lone UTF-16 surrogate" in await resp.text()
    assert [e.message.text for e in await inbound_for(nc.jetstream(), address, expect=1)] == ["\u200bvisible 👍"]
