"""A command that would record personal data about an erased customer answers 410, not 500."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from events.personal import KeyDestroyed
from services.api.app import refuse_for_erased_customers


async def test_a_command_about_an_erased_customer_is_410_with_a_reason() -> None:
    async def reply(request: web.Request) -> web.Response:
        raise KeyDestroyed("cu_gone")

    async def fine(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[refuse_for_erased_customers])
    app.router.add_post("/reply", reply)
    app.router.add_get("/fine", fine)
    async with TestClient(TestServer(app)) as client:
        refused = await client.post("/reply")
        assert refused.status == 410
        assert "erased" in (await refused.json())["error"]
        ok = await client.get("/fine")
        assert ok.status == 200
