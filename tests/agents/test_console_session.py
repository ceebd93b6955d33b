"""Sign in once per browser (services.api.session): the token exchanged for an HttpOnly
cookie that then acts as the bearer, guarded against cross-site requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest

from services.api.session import COOKIE, CSRF_HEADER, SessionSealer

from .helpers import API_TOKEN, AgentSystem, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def browser_like() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies like a browser (also for a bare IP host)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def sign_in(http: aiohttp.ClientSession, api: str, token: str, **headers: str) -> tuple[int, Any, str]:
    async with http.post(api + "/v1/session", json={"token": token}, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Set-Cookie", "")


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as r:
        return r.status, await r.json()


async def test_a_token_signs_the_browser_in_once_and_the_cookie_acts_as_that_token(
    s: AgentSystem, browser_like: aiohttp.ClientSession
) -> None:
    token, _ = await s.issue_token("ava")
    status, body, set_cookie = await sign_in(browser_like, s.api, token)
    assert status == 200, body
    assert body["actor"] == "agent:ava"
    cookie = SimpleCookie(set_cookie)[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain http here; see the https test below
    assert token not in set_cookie  # sealed, not the token itself

    # No Authorization header from now on: the cookie is who she is, with an agent's reach.
    status, me = await call(browser_like, "GET", s.api + "/v1/agent/me")
    assert status == 200 and me["agent"]["id"] == "ava"
    status, refused = await call(browser_like, "GET", s.api + "/v1/deliveries")
    assert status == 403, refused

    # A bad token gets no cookie.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        status, body, set_cookie = await sign_in(other, s.api, "rdat_not-a-token")
        assert status == 401 and body["error"] == "invalid token" and COOKIE not in set_cookie
        assert (await call(other, "GET", s.api + "/v1/agent/me"))[0] == 401


async def test_a_deactivated_agents_token_signs_nobody_in(s: AgentSystem, browser_like: aiohttp.ClientSession) -> None:
    """Every call of hers is refused once she is deactivated: a sign-in set a cookie anyway."""
    token, _ = await s.issue_token("bruno")
    assert (await s.call("DELETE", "/v1/agents/bruno", body={"reason": "left the team"}))[0] == 200

    async def refused() -> tuple[int, Any, str] | None:
        answer = await sign_in(browser_like, s.api, token)
        return answer if answer[0] == 403 else None

    _, body, set_cookie = await eventually(refused)
    assert body["error"] == "agent bruno is deactivated" and COOKIE not in set_cookie


async def test_behind_https_the_cookie_is_secure(s: AgentSystem, browser_like: aiohttp.ClientSession) -> None:
    status, body, set_cookie = await sign_in(browser_like, s.api, API_TOKEN, **{"X-Forwarded-Proto": "https"})
    assert status == 200 and body["actor"] == "operator"
    assert SimpleCookie(set_cookie)[COOKIE]["secure"]


async def test_a_cookie_command_from_another_site_is_refused(
    s: AgentSystem, browser_like: aiohttp.ClientSession
) -> None:
    token, _ = await s.issue_token("ava")
    assert (await sign_in(browser_like, s.api, token))[0] == 200
    url = s.api + "/v1/agent/status"
    away = {"status": "away"}

    # A form or fetch from another site: no custom header, a foreign Origin (or none at all).
    status, body = await call(browser_like, "POST", url, json=away, headers={"Origin": "https://evil.example"})
    assert status == 403 and "cross-site" in body["error"]
    status, body = await call(browser_like, "POST", url, json=away)
    assert status == 403
    status, body = await call(
        browser_like, "POST", url, json=away, headers={"Origin": "https://evil.example", CSRF_HEADER: "1"}
    )
    assert status == 403
    agent = await s.call("GET", "/v1/agents/ava")
    assert agent[1]["status"] != "away", "a refused command did nothing"
    # Reading stays allowed (nothing changes), and the sign-in page itself refuses a foreign Origin.
    assert (await call(browser_like, "GET", s.api + "/v1/agent/work"))[0] == 200
    status, _, _ = await sign_in(browser_like, s.api, token, Origin="https://evil.example")
    assert status == 403

    # The console's own requests: its Origin, or the header it sets.
    status, body = await call(browser_like, "POST", url, json=away, headers={"Origin": s.api})
    assert status == 200 and body["status"] == "away"
    status, body = await call(browser_like, "POST", url, json={"status": "available"}, headers={CSRF_HEADER: "1"})
    assert status == 200 and body["status"] == "available"
    # A bearer caller is not a browser session: no CSRF rule.
    assert (await s.call("POST", "/v1/agent/status", token=token, body=away))[0] == 200


async def test_log_out_ends_the_session_and_revoking_the_token_ends_it_too(
    s: AgentSystem, browser_like: aiohttp.ClientSession
) -> None:
    token, token_id = await s.issue_token("ava")
    _, _, set_cookie = await sign_in(browser_like, s.api, token)
    copied = SimpleCookie(set_cookie)[COOKIE].value  # what a proxy or an extension saw
    assert (await call(browser_like, "DELETE", s.api + "/v1/session"))[0] == 403  # not from the console
    async with browser_like.delete(s.api + "/v1/session", headers={CSRF_HEADER: "1"}) as r:
        assert r.status == 200 and (await r.json())["signed_out"] is True
        forgotten = SimpleCookie(r.headers["Set-Cookie"])[COOKIE]
        assert forgotten.value == "" and forgotten["max-age"] == "0"
    assert (await call(browser_like, "GET", s.api + "/v1/agent/me"))[0] == 401
    # The copy taken before the logout is refused too (found by an audit: it worked 12 hours).
    async with aiohttp.ClientSession(cookies={COOKIE: copied}) as thief:
        assert (await call(thief, "GET", s.api + "/v1/agent/me"))[0] == 401

    # Signed in again, then an operator revokes the token: the session ends at once.
    assert (await sign_in(browser_like, s.api, token))[0] == 200
    assert (await call(browser_like, "GET", s.api + "/v1/agent/me"))[0] == 200
    status, _ = await s.call("DELETE", f"/v1/agents/ava/tokens/{token_id}")
    assert status == 200

    async def refused() -> bool:
        return (await call(browser_like, "GET", s.api + "/v1/agent/me"))[0] == 401

    await eventually(refused)
    assert not [c for c in browser_like.cookie_jar if c.key == COOKIE], "the 401 answer forgot the cookie"


def test_a_session_survives_a_restart_of_the_api_but_not_a_new_signing_key_or_its_expiry() -> None:
    """The session is in the cookie: an API started again with the same signing key (or another
    replica) opens the cookie; another key, a changed byte or the passing of its expiry do not."""
    now = [1_000_000.0]
    before = SessionSealer(b"signing key", clock=lambda: now[0])
    value, expires = before.seal("rdat_token", lifetime=60)
    assert expires == now[0] + 60
    after_restart = SessionSealer(b"signing key", clock=lambda: now[0])
    opened = after_restart.open(value)
    assert opened is not None and opened.token == "rdat_token" and len(opened.session_id) == 32
    another = before.open(before.seal("rdat_token")[0])  # each sign-in is a session of its own
    assert another is not None and another.session_id != opened.session_id
    assert SessionSealer(b"another key", clock=lambda: now[0]).open(value) is None
    tampered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    assert after_restart.open(tampered) is None
    assert after_restart.open("not a cookie") is None
    now[0] += 61
    assert after_restart.open(value) is None
