"""A fake Meta Graph API (WhatsApp Cloud API and Messenger sends), as far as Relaydesk uses it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from tests.fake_http import serving_posts


class FakeGraph:
    """Graph API ``POST /{version}/{node}/messages``, answering as documented."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []  # (node, body)

    async def messages(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.sent.append((request.match_info["node"], body))
        if body.get("messaging_product") == "whatsapp":
            wamid = f"wamid.HBgL{len(self.sent):010d}"
            return web.json_response(
                {"messaging_product": "whatsapp", "contacts": [{"wa_id": body["to"]}], "messages": [{"id": wamid}]}
            )
        return web.json_response({"recipient_id": body["recipient"]["id"], "message_id": f"m_{len(self.sent)}"})


@contextlib.asynccontextmanager
async def fake_graph_server() -> AsyncIterator[tuple[FakeGraph, str]]:
    """A ``FakeGraph`` on a free port: (the fake, its base URL)."""
    fake = FakeGraph()
    async with serving_posts({"/{version}/{node}/messages": fake.messages}) as url:
        yield fake, url
