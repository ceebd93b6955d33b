"""A visitor sending faster than the chat's limit (the flood audit): what it gets, and what
the operator's log gets."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from .conftest import StartChat
from .helpers import SITE, chat_socket, open_session, recv


async def post(http: aiohttp.ClientSession, url: str, token: str, n: int) -> tuple[int, Any, Any]:
    headers = {"Origin": SITE, "Authorization": f"Bearer {token}"}
    async with http.post(url + "/messages", json={"client_msg_id": f"m{n}", "text": f"spam {n}"}, headers=headers) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def test_a_flooding_visitor_gets_429_with_retry_after_the_widget_can_read(
    start_chat: StartChat, log_lines: list[dict[str, Any]]
) -> None:
    runtime, url = await start_chat(rate_limit_per_minute=5)
    status, session = await open_session(url)
    assert status == 200, session
    answers = []
    async with aiohttp.ClientSession() as http:
        for n in range(200):
            answers.append(await post(http, url, session["token"], n))
    assert [a[0] for a in answers[:5]] == [200] * 5
    refused = answers[5:]
    assert {a[0] for a in refused} == {429}
    for _status, headers, body in refused:
        # What the sessions' 429 says: when to come back, in the header and the body...
        assert int(headers["Retry-After"]) >= 1 and body["retryable"] is True and body["retry_after"] >= 1, body
        # ...and the browser lets the widget read it (a cross-origin answer without CORS
        # headers is a network error to the page's script, which then resends at once).
        assert headers["Access-Control-Allow-Origin"] == SITE
    assert runtime.metrics.rejected_by_reason["rate_limit"] == len(refused)
    # One warning a visitor a minute, not one a message: a flood does not flood the log.
    limited = [line for line in log_lines if line.get("status") == 429 and line.get("log_level") != "debug"]
    assert len(limited) <= 2, limited


async def test_a_flooding_socket_is_told_when_to_come_back_and_logged_once(
    start_chat: StartChat, log_lines: list[dict[str, Any]]
) -> None:
    runtime, url = await start_chat(rate_limit_per_minute=5)
    _, session = await open_session(url)
    async with chat_socket(url, session["token"]) as (ws, _):
        answers = []
        for n in range(100):
            await ws.send(json.dumps({"type": "message", "client_msg_id": f"w{n}", "text": f"spam {n}"}))
            answers.append(await recv(ws))
    refused = [a for a in answers if a.get("code") == "rate_limited"]
    assert len(refused) == 95 and all(a["retry_after"] >= 1 for a in refused), answers[:8]
    assert runtime.metrics.rejected_by_reason["rate_limit"] == 95
    limited = [line for line in log_lines if line.get("status") == 429 and line.get("log_level") != "debug"]
    assert len(limited) <= 1, limited
