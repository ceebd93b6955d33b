"""A web chat visitor hears that their conversation was resolved: the API queues a notice, the
chat connector stores one ``closed`` frame in the visitor's history (what the widget shows), and
the visitor's next message opens a new conversation. The whole path runs: chat connector, intake,
router, API, outbound worker, over a real nats-server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import nats
import pytest

from connectors.chat.history import ChatHistory, Frame
from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.system import System, eventually, running_system, system_config

pytestmark = pytest.mark.integration

CHAT_SECRET = "s" * 40
JWT_SECRET = "j" * 40
WIDGET_KEY = "wk_test"
USER = "ann-7"


async def chat_session(system: System, chat: str) -> str:
    now = int(time.time())
    identity = jwt.encode({"sub": USER, "iat": now, "exp": now + 600}, JWT_SECRET, algorithm="HS256")
    async with system.http.post(
        chat + "/sessions", json={"widget_key": WIDGET_KEY, "identity_token": identity}, headers={"Origin": chat}
    ) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


async def write(system: System, chat: str, token: str, client_msg_id: str, text: str) -> None:
    async with system.http.post(
        chat + "/messages",
        json={"client_msg_id": client_msg_id, "text": text},
        headers={"Authorization": f"Bearer {token}", "Origin": chat},
    ) as r:
        assert r.status == 200, await r.text()


async def open_conversations(system: System, customer_id: str) -> list[dict[str, Any]]:
    status, body = await system.get("/v1/conversations")
    assert status == 200, body
    return [c for c in body["conversations"] if c["customer_id"] == customer_id]


async def frames(system: System) -> list[Frame]:
    nc = await nats.connect(system.nats.url)
    try:
        return await ChatHistory(js=nc.jetstream()).read(f"user:{USER}", 0)
    finally:
        await nc.close()


async def test_a_resolved_chat_says_so_once_and_the_next_message_opens_a_new_conversation(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    chat_port = free_port()
    config.connectors["chat"] = {
        "port": chat_port,
        "widget_key": WIDGET_KEY,
        "session_secret": CHAT_SECRET,
        "identity_jwt_secret": JWT_SECRET,
    }
    chat = f"http://127.0.0.1:{chat_port}"
    async with running_system(config, clean_nats) as system:
        token = await chat_session(system, chat)
        await write(system, chat, token, "c1", "Where is my parcel?")

        async def customer() -> str | None:
            status, body = await system.get("/v1/customers", identity=f"chat:user:{USER}")
            return body["customers"][0]["customer_id"] if status == 200 and body["customers"] else None

        customer_id = await eventually(customer, timeout=30)
        [first] = await eventually(lambda: open_conversations(system, customer_id), timeout=30)
        status, body = await system.post(f"/v1/conversations/{first['id']}/resolve", {})
        assert status == 200, body

        async def closed() -> list[Frame] | None:
            kept = await frames(system)
            return kept if any(f.kind == "closed" for f in kept) else None

        kept = await eventually(closed, timeout=30)
        assert [f.kind for f in kept] == ["message", "closed"]
        assert kept[1].key == first["id"] and kept[1].to_json()["type"] == "closed"

        # The visitor writes again: a new conversation, after the notice.
        await write(system, chat, token, "c2", "One more thing")

        async def another() -> list[dict[str, Any]] | None:
            convs = await open_conversations(system, customer_id)
            return convs if convs and convs[0]["id"] != first["id"] else None

        await eventually(another, timeout=30)
        assert [f.kind for f in await frames(system)] == ["message", "closed", "message"]
