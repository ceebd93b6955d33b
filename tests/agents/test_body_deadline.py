"""Every API route, signed in or not, answers a body that trickles in with 408 within the
deadline (``services.api.body_deadline``): aiohttp waits for a body for ever, so a client that
sent a head with ``Content-Length`` and then nothing held a request, and its handler, for as
long as it liked (the console's sign-in reads its body before anything proves who sends it).
A body that arrives in time is served as before. Over a real nats-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.sdk import http as connector_http
from services.bus.embedded import EmbeddedNats
from tests.trickle import answer_to_trickling_body

from .helpers import API_TOKEN, agent_system, agents_config

pytestmark = pytest.mark.integration


async def test_a_body_that_trickles_in_is_408_on_every_route(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connector_http, "BODY_TIMEOUT", 0.5)
    config = agents_config(tmp_path, clean_nats.url)
    async with agent_system(config, clean_nats, services=("api",)) as s:
        base = f"http://{config.api.host}:{config.api.port}"
        for path, auth in (
            ("/v1/session", ""),  # the console's sign-in: nobody proved who they are yet
            ("/v1/agents/ava/tokens", f"Authorization: Bearer {API_TOKEN}\r\n"),
        ):
            answer = await answer_to_trickling_body(
                base, path, content_type="application/json", start=b"{", headers=auth
            )
            assert answer.startswith(b"HTTP/1.1 408 "), (path, answer)
        # A body all there is served, however long the deadline is.
        status, body = await s.call("POST", "/v1/agents/ava/tokens", body={"label": "in time"})
        assert status == 201, body
