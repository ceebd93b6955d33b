"""The history in JetStream: it survives restarts, is shared by instances, and live frames reach
a visitor's sockets on whichever instance holds them. Real nats-server, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
import websockets
from nats.aio.client import Client as NATS
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from connectors.chat import tokens
from connectors.chat.connector import WebChatConnector
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import DeliverReply
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats

from .helpers import SECRET, SITE, chat_config, chat_socket, open_session, recv, recv_until, ws_url

pytestmark = pytest.mark.integration

Instance = tuple[ConnectorRuntime, WebChatConnector, str]
StartInstance = Callable[..., Awaitable[Instance]]


def reply_to(address: str, text: str) -> DeliverReply:
    return DeliverReply(
        conversation_id="conv_" + uuid.uuid4().hex[:12],
        customer_id="cus_" + uuid.uuid4().hex[:12],
        channel="chat",
        reply_id="rep_" + uuid.uuid4().hex[:12],
        contact=address,
        text=text,
    )


def seq_of(provider_message_id: str) -> int:
    return int(provider_message_id.rpartition("-")[2])


@pytest.fixture
async def instance(nats_url: str) -> AsyncIterator[StartInstance]:
    """Chat instances on the shared nats-server, each with its own NATS connection (as separate
    processes would have); ``stop`` on the runtime is the restart."""
    started: list[tuple[ConnectorRuntime, NATS]] = []

    async def start(**extra: object) -> Instance:
        nc = await nats.connect(nats_url)
        await ensure_streams(nc.jetstream())
        connector = WebChatConnector.from_config(chat_config(outbound=False, **extra))
        runtime = ConnectorRuntime(connector, nc)
        [url, *_] = await runtime.start()
        started.append((runtime, nc))
        return runtime, connector, url

    yield start
    for runtime, nc in started:
        await runtime.stop()
        await nc.drain()


async def test_reply_delivered_while_away_survives_a_restart(instance: StartInstance) -> None:
    runtime, chat, url = await instance()
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, ready):
        await ws.send(json.dumps({"type": "message", "client_msg_id": "before", "text": "anyone there?"}))
        asked = (await recv(ws))["seq"]
        epoch = ready["epoch"]
    # The visitor left; the reply is stored and reported sent.
    result = await chat.deliver(reply_to(address, "Yes, here is your answer"))
    assert result.ok
    await runtime.stop()

    # A new process: nothing in memory, the stream has it.
    _, _, url2 = await instance()
    _, fresh = await open_session(url2, visitor_id=session["visitor_id"])
    assert fresh["epoch"] == epoch and fresh["last_seq"] == seq_of(result.provider_message_id)
    async with chat_socket(url2, fresh["token"], after_seq=asked, epoch=epoch) as (ws, ready):
        assert ready["last_seq"] == seq_of(result.provider_message_id)
        frame = await recv(ws)
        assert (frame["type"], frame["text"], frame["seq"]) == (
            "reply",
            "Yes, here is your answer",
            seq_of(result.provider_message_id),
        )
    # A fresh page (after_seq 0) gets the whole conversation, in order.
    async with chat_socket(url2, fresh["token"]) as (ws, _):
        assert [(await recv(ws))["type"] for _ in range(2)] == ["message", "reply"]


async def test_after_seq_catch_up_across_a_restart(instance: StartInstance) -> None:
    runtime, chat, url = await instance()
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, ready):
        epoch = ready["epoch"]
        seen = (await chat.deliver(reply_to(address, "one"))).provider_message_id
        assert (await recv(ws))["seq"] == seq_of(seen)
    await runtime.stop()

    runtime2, chat2, url2 = await instance()
    missed = [seq_of((await chat2.deliver(reply_to(address, t))).provider_message_id) for t in ("two", "three")]
    assert seq_of(seen) < missed[0] < missed[1]
    # The widget's resend after the restart: the same client_msg_id is one frame, one seq.
    _, fresh = await open_session(url2, visitor_id=session["visitor_id"])
    async with chat_socket(url2, fresh["token"], query=f"after_seq={seq_of(seen)}&epoch={epoch}") as (ws, ready):
        assert ready["epoch"] == epoch
        frames = [await recv(ws), await recv(ws)]
        assert [(f["text"], f["seq"]) for f in frames] == [("two", missed[0]), ("three", missed[1])]
        await ws.send(json.dumps({"type": "message", "client_msg_id": "c-9", "text": "thanks"}))
        ack = await recv(ws)
        assert ack["type"] == "ack" and ack["seq"] > missed[1]
    await runtime2.stop()
    _, _, url3 = await instance()
    async with chat_socket(url3, fresh["token"], after_seq=missed[1], epoch=epoch) as (ws, _):
        await ws.send(json.dumps({"type": "message", "client_msg_id": "c-9", "text": "thanks"}))
        frames = [await recv(ws), await recv(ws)]
        # The kept frame (catch-up) then the ack of the resend: the same sequence.
        assert frames[0]["type"] == "message" and frames[0]["seq"] == ack["seq"]
        assert frames[1] == ack


async def test_reply_through_instance_a_reaches_the_socket_on_instance_b(instance: StartInstance) -> None:
    _, chat_a, url_a = await instance()
    _, chat_b, url_b = await instance()
    _, session = await open_session(url_a)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with (
        chat_socket(url_b, session["token"]) as (on_b, _),
        chat_socket(url_a, session["token"]) as (on_a, _),
    ):
        reply = reply_to(address, "Delivered by A")
        result = await chat_a.deliver(reply)
        assert result.ok
        for ws in (on_b, on_a):
            frame = await recv(ws)
            assert (frame["type"], frame["text"], frame["reply_id"], frame["seq"]) == (
                "reply",
                "Delivered by A",
                reply.reply_id,
                seq_of(result.provider_message_id),
            )
        # The reverse: a reply through B, and a message sent on B shows in the tab on A.
        assert (await chat_b.deliver(reply_to(address, "Delivered by B"))).ok
        assert (await recv(on_a))["text"] == "Delivered by B"
        assert (await recv(on_b))["text"] == "Delivered by B"
        await on_b.send(json.dumps({"type": "message", "client_msg_id": "from-b", "text": "typed on B"}))
        ack = await recv(on_b)
        echo = await recv(on_a)
        assert (echo["type"], echo["client_msg_id"], echo["seq"]) == ("message", "from-b", ack["seq"])
        # Only sockets of this address got anything: another visitor on A sees nothing.
        _, other = await open_session(url_a)
        async with chat_socket(url_a, other["token"]) as (stranger, ready):
            assert ready["last_seq"] == 0
            assert (await chat_b.deliver(reply_to(address, "not for the stranger"))).ok
            assert (await recv(on_a))["text"] == "not for the stranger"
            await stranger.send(json.dumps({"type": "ping"}))
            assert await recv(stranger) == {"type": "pong"}
    # The last socket of the address gone: no subscription is left behind.
    async with asyncio.timeout(3):
        while chat_a.watches or chat_b.watches:
            await asyncio.sleep(0.02)


async def test_a_lost_live_copy_is_read_from_the_stream(instance: StartInstance) -> None:
    """A live copy that never arrives (NATS reconnecting, a slow subscription) shows as a gap
    in the next one's ``Nats-Last-Sequence``: the missed frames are read from the stream, in order."""
    _, chat, url = await instance()
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, _):
        watch = chat.watches[address]
        assert watch.sub is not None
        await watch.sub.unsubscribe()  # deaf for a moment
        lost = await chat.deliver(reply_to(address, "lost live"))
        nc: NATS = chat.nc
        watch.sub = await nc.subscribe(
            chat.history.live_subject(address), cb=functools.partial(chat.live.on_live, watch)
        )
        await nc.flush()
        after = await chat.deliver(reply_to(address, "next one"))
        frames = [await recv(ws), await recv(ws)]
        assert [(f["text"], f["seq"]) for f in frames] == [
            ("lost live", seq_of(lost.provider_message_id)),
            ("next one", seq_of(after.provider_message_id)),
        ]


async def test_after_a_reconnect_missed_frames_are_read(instance: StartInstance) -> None:
    """Nothing follows a lost live copy: the reconnect itself triggers the read."""
    _, chat, url = await instance(resync_interval=0.1)
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, _):
        watch = chat.watches[address]
        assert watch.sub is not None
        await watch.sub.unsubscribe()
        watch.sub = None
        lost = await chat.deliver(reply_to(address, "sent while we were away"))
        nc: NATS = chat.nc
        nc.stats["reconnects"] += 1  # what nats-py counts when it has reconnected
        frame = await recv(ws)
        assert (frame["text"], frame["seq"]) == ("sent while we were away", seq_of(lost.provider_message_id))


async def test_history_keeps_history_frames_per_address(instance: StartInstance, uid: str) -> None:
    _, chat, url = await instance(history_frames=2, history_stream=f"RD_CHAT_{uid}", history_subject=f"t.{uid}")
    _, session = await open_session(url)
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    try:
        for text in ("a", "b", "c"):
            assert (await chat.deliver(reply_to(address, text))).ok
        async with chat_socket(url, session["token"]) as (ws, _):
            assert [(await recv(ws))["text"] for _ in range(2)] == ["b", "c"]
    finally:
        await chat.nc.jetstream().delete_stream(f"RD_CHAT_{uid}")


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, NATS]]:
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.astart()
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)
    await ensure_streams(client.jetstream())
    try:
        yield server, client
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        await server.astop()


async def test_history_unavailable_closes_the_socket_with_try_again_later(
    own_server: tuple[EmbeddedNats, NATS],
) -> None:
    server, nc = own_server
    runtime = ConnectorRuntime(WebChatConnector.from_config(chat_config(outbound=False, ack_timeout=0.5)), nc)
    [url, *_] = await runtime.start()
    try:
        await server.astop()
        token = tokens.issue_token(SECRET, tokens.SessionClaims("visitor:" + uuid.uuid4().hex, int(time.time()) + 60))
        status, body = await open_session(url)
        assert (status, body["error"]) == (503, "chat history unavailable")
        async with connect(ws_url(url), origin=SITE) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "auth", "token": token}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv_until(ws, "ready", timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        await runtime.stop()


async def test_reply_from_rd_out_chat_on_instance_a_reaches_the_socket_on_instance_b(
    own_server: tuple[EmbeddedNats, NATS],
) -> None:
    """End to end: only A runs the outbound worker; the visitor's socket is on B."""
    server, nc = own_server
    nc_b = await nats.connect(server.url)
    a = ConnectorRuntime(WebChatConnector.from_config(chat_config(outbound=True, outbound_fetch_timeout=0.5)), nc)
    b = ConnectorRuntime(WebChatConnector.from_config(chat_config(outbound=False)), nc_b)
    await a.start()
    [url_b, *_] = await b.start()
    try:
        _, session = await open_session(url_b)
        address = tokens.visitor_address(SECRET, session["visitor_id"])
        async with chat_socket(url_b, session["token"]) as (ws, _):
            reply = reply_to(address, "From the worker on A")
            await nc.jetstream().publish(
                subjects.outbound("chat"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id}
            )
            frame = await recv_until(ws, "reply", timeout=10)
            assert (frame["text"], frame["reply_id"]) == (reply.text, reply.reply_id)
        assert a.metrics["delivered"] == 1
    finally:
        await b.stop()
        await a.stop()
        await nc_b.close()


async def test_erasure_deletes_every_frame_of_one_address_and_no_other(nc: NATS) -> None:
    from connectors.chat.history import ChatHistory

    suffix = uuid.uuid4().hex[:8]
    history = ChatHistory(stream=f"RD_CHAT_ERASE_{suffix}", prefix=f"rd.chaterase{suffix}", js=nc.jetstream())
    await history.ensure()
    ann, bob = f"user:ann-{suffix}", f"user:bob-{suffix}"
    for n in range(3):
        await history.append(ann, "message", f"a{n}", f"ann's words {n}")
    await history.append(bob, "message", "b0", "bob's words")
    assert await history.erase(ann) == 3
    assert await history.read(ann, 0) == []
    assert [f.text for f in await history.read(bob, 0)] == ["bob's words"]
    assert await history.erase(ann) == 0
    await nc.jetstream().delete_stream(history.stream)


async def test_a_frame_this_version_cannot_read_is_logged_and_the_rest_replays(nc: NATS) -> None:
    """It was skipped in silence (a suppress): a visitor's history had a hole nobody heard of."""
    from connectors.chat.history import ChatHistory
    from events.skips import SKIPPED

    suffix = uuid.uuid4().hex[:8]
    history = ChatHistory(stream=f"RD_CHAT_ODD_{suffix}", prefix=f"rd.chatodd{suffix}", js=nc.jetstream())
    await history.ensure()
    ann = f"user:ann-{suffix}"
    await history.append(ann, "message", "a0", "first")
    await nc.jetstream().publish(history.subject(ann), b'{"not": "a frame"}')
    await history.append(ann, "message", "a1", "second")
    skipped = SKIPPED.labels(where="chat.history_frame")
    before = skipped._value.get()
    with capture_logs() as logs:
        assert [f.text for f in await history.read(ann, 0)] == ["first", "second"]
    assert skipped._value.get() == before + 1
    warned = [e["event"] for e in logs if e["log_level"] == "warning" and e["event"].startswith("chat.")]
    assert warned == ["chat.history_frame_skipped"]  # (the history's own: another test's leftover may log too)
    await nc.jetstream().delete_stream(history.stream)
