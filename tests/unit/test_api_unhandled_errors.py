"""An exception no handler expected is a JSON 500 in the contract's ``Error`` shape, with an
incident id and nothing of the exception's text; the traceback is logged under that id.
Found by a fuzzing audit: ``GET /v1/files/é.é`` (a TypeError in the signed link's check) and
a multipart upload without a boundary (a ValueError) were aiohttp's plain-text 500."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.api.errors import json_errors


async def test_an_unexpected_exception_is_a_json_500_that_quotes_nothing(log_lines: list[dict[str, Any]]) -> None:
    async def broken(_request: web.Request) -> web.Response:
        raise TypeError("comparing strings with non-ASCII characters: ann@example.com")

    app = web.Application(middlewares=[json_errors(1024)])
    app.router.add_get("/v1/files/{token}", broken)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/files/%C3%A9.%C3%A9")
        assert (response.status, response.content_type) == (500, "application/json")
        body = await response.json()
    assert set(body) == {"error", "incident"} and len(body["incident"]) == 16, body
    assert body["error"].startswith("internal error") and "ASCII" not in body["error"], body
    logged = [line for line in log_lines if line["event"] == "api.unhandled_error"]
    assert len(logged) == 1, log_lines
    assert logged[0]["incident"] == body["incident"] and logged[0]["error"] == "TypeError"
    assert logged[0]["path"] == "/v1/files/é.é" and isinstance(logged[0]["exc_info"], TypeError)


async def test_a_stream_that_fails_midway_gets_no_second_answer(log_lines: list[dict[str, Any]]) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: work\ndata: {}\n\n")
        raise RuntimeError("the stream broke")

    app = web.Application(middlewares=[json_errors(1024)])
    app.router.add_get("/v1/agent/stream", stream)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/agent/stream")
        assert response.status == 200  # the answer began; no JSON 500 is written into it
        assert (await response.content.read(100)).startswith(b"event: work")
    assert not [line for line in log_lines if line["event"] == "api.unhandled_error"]
