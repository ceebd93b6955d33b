"""``relaydesk_http_request_seconds`` has a bounded set of series whatever clients send: a
made-up method (taken by aiohttp's Python parser) is labelled ``other``, not a series of its
own kept for as long as the process runs."""

from __future__ import annotations

import uuid

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import REGISTRY

from connectors.sdk.metrics import http_metrics


def methods_of(server: str) -> set[str]:
    return {
        sample.labels["method"]
        for metric in REGISTRY.collect()
        if metric.name == "relaydesk_http_request_seconds"
        for sample in metric.samples
        if sample.labels.get("server") == server
    }


async def test_made_up_methods_share_one_label() -> None:
    server = f"test-{uuid.uuid4().hex[:8]}"
    observe = http_metrics(server)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=405)

    for method in ("GET", "POST", *(f"X{n}" for n in range(50))):
        await observe(make_mocked_request(method, "/twilio/sms"), handler)
    assert methods_of(server) == {"GET", "POST", "other"}
