"""What a stalled sink takes from its settings source again: the API client's settings only,
and nothing from a re-read that fails (``services.sinks.sdk.reload``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.sinks.conformance import FakeSettings
from services.sinks.runner import ConfigSettings
from services.sinks.sdk import SettingsUnavailable
from services.sinks.sdk.api import ProviderApi
from services.sinks.sdk.reload import reload_api
from services.sinks.zendesk import ZendeskSink

from .zendesk_fake import zendesk_config

TABLE: dict[str, Any] = zendesk_config("http://zendesk.invalid")


async def started() -> ZendeskSink:
    sink = ZendeskSink.from_config(TABLE)
    sink.api = sink.make_api()
    await sink.api.open()
    return sink


async def closed(api: ProviderApi, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while api._http is not None:
        assert asyncio.get_running_loop().time() < deadline, "the old client was never closed"
        await asyncio.sleep(0.01)


async def test_only_the_api_clients_settings_are_taken_and_the_old_client_is_closed(
    log_lines: list[dict[str, Any]],
) -> None:
    sink = await started()
    old = sink.api
    source = FakeSettings({**TABLE, "api_token": "rotated", "webhook_secret": "new-secret", "agents": {}})
    assert await reload_api(sink, source, structlog.get_logger()) == ["api_token"]
    logs = log_lines
    assert sink.settings.api_token == "rotated" and sink.api is not old
    await closed(old)  # once idle, in the background: here at once
    assert sink.settings.webhook_secret == TABLE["webhook_secret"] and sink.settings.agents == TABLE["agents"]
    assert [line["event"] for line in logs] == ["sink.credentials_reloaded"] and "rotated" not in repr(logs)
    await sink.api.close()


async def test_a_call_under_way_on_the_old_client_finishes_on_it() -> None:
    """The old client was closed at once: a call another event (or a webhook) had under way on
    it failed as if the helpdesk were unreachable, and its event was tried again for nothing."""
    answer = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        arrived.set()
        await answer.wait()
        return web.json_response({"ticket": {"id": 7}})

    app = web.Application()
    app.router.add_get("/api/v2/tickets/7.json", slow)
    async with TestServer(app) as server:
        sink = ZendeskSink.from_config(zendesk_config(str(server.make_url("")).rstrip("/")))
        sink.api = sink.make_api()
        await sink.api.open()
        old = sink.api
        call = asyncio.create_task(old.call("GET", "/api/v2/tickets/7.json"))
        await asyncio.wait_for(arrived.wait(), 10)
        table = {**zendesk_config(str(server.make_url("")).rstrip("/")), "api_token": "rotated"}
        assert await reload_api(sink, FakeSettings(table), structlog.get_logger()) == ["api_token"]
        await asyncio.sleep(0)
        assert old._http is not None and not call.done()  # still serving the call under way
        answer.set()
        assert await asyncio.wait_for(call, 10) == {"ticket": {"id": 7}}
        await closed(old)  # and closed once it was done
        await sink.api.close()


async def test_unchanged_credentials_keep_the_client() -> None:
    sink = await started()
    old = sink.api
    assert await reload_api(sink, FakeSettings({**TABLE, "port": 9999}), structlog.get_logger()) == []
    assert sink.api is old and sink.settings.port == 0
    await old.close()


@pytest.mark.parametrize("broken", [{"api_token": ""}, {"api_tokn": "x"}, {"api_attempts": "many"}])
async def test_a_reread_that_does_not_validate_changes_nothing(
    broken: dict[str, Any], log_lines: list[dict[str, Any]]
) -> None:
    sink = await started()
    old, settings = sink.api, sink.settings
    assert await reload_api(sink, FakeSettings({**TABLE, **broken}), structlog.get_logger()) == []
    assert sink.api is old and sink.settings is settings
    [line] = log_lines
    assert line["event"] == "sink.credentials_reload_failed" and line["problem"].startswith("[sinks.zendesk]")
    await old.close()


def test_the_config_source_says_what_is_wrong_without_values(tmp_path: Path) -> None:
    config = tmp_path / "relaydesk.toml"
    config.write_text('[sinks.zendesk]\napi_token = "tok-secret-1"\napi_url = "http://x"\n')
    assert ConfigSettings("zendesk", config, env={})()["api_token"] == "tok-secret-1"
    with pytest.raises(SettingsUnavailable, match=r"\[sinks\.freshdesk\] is no longer configured"):
        ConfigSettings("freshdesk", config, env={})()
    for broken in ('api_token = "tok-secret-1\n', 'api_token = "tok-secret-1"\n[api]\nport = "eighty"\n'):
        config.write_text("[sinks.zendesk]\n" + broken)
        with pytest.raises(SettingsUnavailable) as err:
            ConfigSettings("zendesk", config, env={})()
        assert "tok-secret-1" not in str(err.value) and str(err.value)
