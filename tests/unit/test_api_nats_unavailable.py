"""A request that needs NATS while NATS is away or slow gets a JSON 503 saying the outcome is
unknown. aiohttp answers a handler's ``TimeoutError`` (nats-py's is one) with a blank 504:
``GET /v1/deliveries`` once did that after waiting 5 s on a request NATS refused."""

from __future__ import annotations

import nats.errors
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.js.errors import ServiceUnavailableError

from events.storage_full import STORAGE_FULL, STORAGE_FULL_REFUSALS
from services.api.errors import NATS_AWAY, json_errors


async def test_nats_not_answering_is_a_json_503_to_retry() -> None:
    async def slow(_request: web.Request) -> web.Response:
        raise nats.errors.TimeoutError

    async def gone(_request: web.Request) -> web.Response:
        raise nats.errors.ConnectionClosedError

    app = web.Application(middlewares=[json_errors(1024)])
    app.router.add_get("/slow", slow)
    app.router.add_post("/gone", gone)
    async with TestClient(TestServer(app)) as client:
        for method, path in (("GET", "/slow"), ("POST", "/gone")):
            response = await client.request(method, path)
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert await response.json() == {"error": NATS_AWAY}


async def test_jetstream_out_of_storage_is_a_503_that_says_so() -> None:
    """Found by a long-run audit: a full disk under NATS was said as "NATS did not answer", and
    clients were told to retry in a second, for as long as nobody freed space."""

    async def full(_request: web.Request) -> web.Response:
        raise ServiceUnavailableError(code=503, err_code=10023, description="insufficient resources")

    app = web.Application(middlewares=[json_errors(1024)])
    app.router.add_post("/full", full)
    before = STORAGE_FULL_REFUSALS.labels(where="api")._value.get()
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/full")
        assert response.status == 503
        assert response.headers["Retry-After"] == "60"
        assert await response.json() == {"error": STORAGE_FULL}
    assert STORAGE_FULL_REFUSALS.labels(where="api")._value.get() == before + 1
