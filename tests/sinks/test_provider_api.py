"""The helpdesk client every sink calls through: what it retries, what it refuses at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from services.sinks.sdk import AuthFailed, ProviderApi, Rejected, Transient


class Script:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        status = self.statuses.pop(0) if self.statuses else 200
        return web.json_response({"ok": status < 300, "authorization": request.headers["Authorization"]}, status=status)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Script, ProviderApi]]:
    script = Script()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    api = ProviderApi("test", f"http://{host}:{port}", "Basic abc", attempts=3, backoff=0.01)
    try:
        yield script, api
    finally:
        await api.close()
        await runner.cleanup()


async def test_server_errors_are_retried_then_succeed(served: tuple[Script, ProviderApi]) -> None:
    script, api = served
    script.statuses = [503, 500]
    assert await api.call("GET", "/x") == {"ok": True, "authorization": "Basic abc"}
    assert script.calls == 3


async def test_a_helpdesk_that_stays_down_is_transient_after_the_attempts(served: tuple[Script, ProviderApi]) -> None:
    script, api = served
    script.statuses = [502, 502, 502, 200]
    with pytest.raises(Transient, match="after 3 attempts"):
        await api.call("POST", "/x", json={})
    assert script.calls == 3


async def test_refusals_are_not_retried(served: tuple[Script, ProviderApi]) -> None:
    script, api = served
    script.statuses = [422]
    with pytest.raises(Rejected, match="422"):
        await api.call("PUT", "/x", json={})
    script.statuses = [403]
    with pytest.raises(AuthFailed, match="403"):
        await api.call("PUT", "/x", json={})
    assert script.calls == 2


async def test_a_write_that_is_not_idempotent_is_not_sent_again_blind(served: tuple[Script, ProviderApi]) -> None:
    script, api = served
    script.statuses = [503, 200]
    with pytest.raises(Transient, match="not retried"):
        await api.call("POST", "/notes", json={}, retry=False)
    assert script.calls == 1  # the helpdesk may have stored it: the sink looks before posting again
    script.statuses = [429, 200]  # a 429 was not carried out: waited out and sent again
    assert (await api.call("POST", "/notes", json={}, retry=False))["ok"] is True
    assert script.calls == 3
