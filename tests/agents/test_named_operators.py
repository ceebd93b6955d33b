"""Named operator tokens ([api.operators], services.api.operators): each person who operates
Relaydesk acts with the operator's rights under their own name, on every event and session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import structlog.testing

from events.model import AgentStatusChanged, AgentTokenIssued
from services.api import operators, operators_reload
from services.bus.connection import ServiceFailed
from services.bus.embedded import EmbeddedNats
from services.cli import main as cli
from services.config import Config, check
from services.runners import run_api
from tests.browser import in_thread, needs_chromium

from .helpers import API_TOKEN, AgentSystem, agent_system, agents_config, eventually, ok
from .test_console_browser import visible
from .test_console_shift import sign_in

MARIA = operators.new_token()


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    config = agents_config(tmp_path, clean_nats.url)
    config.api = msgspec.structs.replace(config.api, operators={"maria": operators.hashed(MARIA)})
    async with agent_system(config, clean_nats) as system:
        yield system


@pytest.mark.integration
async def test_a_named_operator_acts_as_operator_under_her_own_name(s: AgentSystem) -> None:
    me = await ok(s, "GET", "/v1/agent/me", MARIA)
    assert (me["actor"], me["role"], me["operator"]) == ("operator:maria", "operator", True)
    await ok(s, "GET", "/v1/deliveries", MARIA)  # operator only
    await ok(s, "GET", "/v1/dlq", MARIA)
    issued = await ok(s, "POST", "/v1/agents/ava/tokens", MARIA, {"label": "desk"})
    await ok(s, "POST", "/v1/agents/bruno/status", MARIA, {"status": "away"})
    await ok(s, "POST", "/v1/agents/bruno/status", API_TOKEN, {"status": "available"})

    tokens = [e.event for e in await s.store.read("rd.evt.a.ava") if isinstance(e.event, AgentTokenIssued)]
    assert [(t.token_id, t.actor) for t in tokens] == [(issued["token_id"], "operator:maria")]
    changes = [e.event for e in await s.store.read("rd.evt.a.bruno") if isinstance(e.event, AgentStatusChanged)]
    assert [c.actor for c in changes[-2:]] == ["operator:maria", "operator"]  # the shared token stays "operator"
    # The token she issued works as Ava's.
    assert (await ok(s, "GET", "/v1/agent/me", issued["token"]))["actor"] == "agent:ava"


@pytest.mark.integration
async def test_a_token_not_in_the_table_is_refused_and_a_named_one_signs_the_console_in(s: AgentSystem) -> None:
    status, body = await s.call("GET", "/v1/deliveries", operators.new_token())
    assert (status, body["error"]) == (401, "invalid token")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(s.api + "/v1/session", json={"token": MARIA}) as r:
            assert r.status == 200 and (await r.json())["actor"] == "operator:maria"
        async with browser.get(s.api + "/v1/deliveries") as r:
            assert r.status == 200


def _problems(tmp_path: Path, table: str) -> list[str]:
    path = tmp_path / "relaydesk.toml"
    path.write_text(f"[api.operators]\n{table}\n")
    return check(path, env={})[1]


def test_the_table_holds_hashes_under_plain_names_one_per_person(tmp_path: Path) -> None:
    good = operators.hashed(MARIA)
    assert _problems(tmp_path, f'maria = "{good}"') == []
    assert _problems(tmp_path, f'"Maria Lopez" = "{good}"') == [
        "[api.operators] 'Maria Lopez': a name is 1-64 lowercase letters, digits, '.', '_' or '-',"
        " starting with a letter or digit"
    ]
    (raw,) = _problems(tmp_path, f'maria = "{MARIA}"')  # the token itself pasted in
    assert raw.startswith("[api.operators] maria: expected 'sha256:'")
    (twice,) = _problems(tmp_path, f'maria = "{good}"\nmarta = "{good}"')
    assert twice == "[api.operators] marta: the same token hash as maria; one token per person"


def test_new_token_prints_a_token_once_and_the_line_that_grants_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["operators", "new-token", "maria"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith(operators.TOKEN_PREFIX)
    assert f'maria = "{operators.hashed(token)}"' in err.splitlines()
    assert cli(["operators", "new-token", "Maria"]) == 2
    assert "a name is 1-64 lowercase" in capsys.readouterr().err


def test_new_token_does_not_ask_for_a_restart_the_api_does_not_need(capsys: pytest.CaptureFixture[str]) -> None:
    """The API takes a changed [api.operators] within 5 s (2014f87); the command still told the
    operator to restart every API to grant a token, and its help to restart to revoke one."""
    assert cli(["operators", "new-token", "maria"]) == 0
    assert "restart the api" not in " ".join(capsys.readouterr().err.lower().split())
    with pytest.raises(SystemExit):
        cli(["operators", "new-token", "--help"])
    assert "restarting revokes" not in " ".join(capsys.readouterr().out.split())


@pytest.mark.integration
@needs_chromium
async def test_the_console_says_which_operator_signed_in(s: AgentSystem, browser: Any) -> None:
    def signed_in() -> None:
        sign_in(browser, s.api, MARIA)
        visible(browser, "#who", "operator:maria")

    await in_thread(signed_in)


@pytest.mark.integration
async def test_a_named_operator_is_named_on_the_log_lines_of_what_she_does(s: AgentSystem) -> None:
    # Found by a docs audit: the README says her name is "in the logs", but the api.command
    # line of a conversation command and the token and profile lines named no actor.
    _customer, cid = await s.open()
    await eventually(lambda: s.conversation(cid))
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            issued = await ok(s, "POST", "/v1/agents/ava/tokens", MARIA, {"label": "desk"})
            await ok(s, "DELETE", f"/v1/agents/ava/tokens/{issued['token_id']}", MARIA)
            await ok(s, "PATCH", "/v1/agents/ava", MARIA, {"max_total": 4})
            await ok(s, "POST", f"/v1/conversations/{cid}/resolve", MARIA)
    finally:
        structlog.configure(**saved)
    actors = {line["event"]: line.get("actor") for line in logs if line["event"].startswith("api.")}
    for event in ("api.agent_token_issued", "api.agent_token_revoked", "api.agent_profile_changed", "api.command"):
        assert actors.get(event) == "operator:maria", (event, actors)


async def test_an_api_whose_shared_token_is_named_does_not_start() -> None:
    """It would authenticate as plain "operator" (the shared token is checked first): the name
    the configuration gives it would never be on what it does."""
    config = Config()
    config.api = msgspec.structs.replace(config.api, operators={"maria": operators.hashed(MARIA)})
    with pytest.raises(ServiceFailed, match=r"\[api.operators\] maria: that is the shared \[api\] token"):
        await run_api(config, None, MARIA, asyncio.Event())  # type: ignore[arg-type]  # stops before NATS
    assert operators.shared_token_named("another-token", config.api.operators) is None


LENA = operators.new_token()


@pytest.mark.integration
async def test_a_changed_table_grants_and_revokes_without_a_restart(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revoking a named operator took an edit and a restart of every API: until then her token
    (and a console session opened with it) kept the operator's rights."""
    monkeypatch.setattr(operators_reload, "RELOAD_EVERY_S", 0.05)
    path = tmp_path / "operators.toml"
    path.write_text(f'[api.operators]\nmaria = "{operators.hashed(MARIA)}"\n')
    config = agents_config(tmp_path, clean_nats.url)
    config.api = msgspec.structs.replace(config.api, operators={"maria": operators.hashed(MARIA)})
    async with agent_system(config, clean_nats, config_path=path) as s:
        assert (await ok(s, "GET", "/v1/agent/me", MARIA))["actor"] == "operator:maria"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as console:
            async with console.post(s.api + "/v1/session", json={"token": MARIA}) as r:
                assert r.status == 200

            path.write_text(f'[api.operators]\nlena = "{operators.hashed(LENA)}"\n')

            async def swapped() -> bool:
                gone = (await s.call("GET", "/v1/deliveries", MARIA))[0] == 401
                return gone and (await s.call("GET", "/v1/deliveries", LENA))[0] == 200

            await eventually(swapped)
            assert (await ok(s, "GET", "/v1/agent/me", LENA))["actor"] == "operator:lena"
            async with console.get(s.api + "/v1/deliveries") as r:
                assert r.status == 401  # her console session went with her token

        # A file with a problem (or naming the shared token) changes nothing, and says why.
        for broken in ("[api.operators\n", f'[api.operators]\nlena = "{operators.hashed(API_TOKEN)}"\n'):
            with structlog.testing.capture_logs() as logs:

                async def refused() -> bool:
                    return any(e["event"] == "api.operators_not_reloaded" for e in logs)

                path.write_text(broken)
                await eventually(refused)
            assert (await s.call("GET", "/v1/deliveries", LENA))[0] == 200
            assert (await s.call("GET", "/v1/deliveries", API_TOKEN))[0] == 200
