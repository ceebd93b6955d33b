"""The Meta webhook against a hostile (but signed) sender: numbers past a float, ids no NATS
header can carry, a message bigger than the bus takes, a challenge that looks like HTML.

Over the session's nats-server, outbound off (see ``test_inbound``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from connectors.sdk.runtime import ConnectorRuntime
from connectors.social.connector import MetaConnector

from .payloads import VERIFY_TOKEN, dumps, messaging, page_batch, page_entry, signed
from .test_inbound import ignored, mine, post, settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def social(nc: NATS) -> AsyncIterator[tuple[ConnectorRuntime, str]]:
    runtime = ConnectorRuntime(MetaConnector.from_config(settings()), nc)
    [base] = await runtime.start()
    try:
        yield runtime, base + "/meta/webhook"
    finally:
        await runtime.stop()


async def test_a_timestamp_past_what_a_float_holds_reads_as_now(
    nc: NATS, social: tuple[ConnectorRuntime, str], uid: str
) -> None:
    """Was a 500 (OverflowError), which Meta retries for 36 h with the batch's good messages."""
    _, url = social
    before = datetime.now(UTC)
    body = dumps(page_batch(page_entry(messaging("PSID_1", f"mid.{uid}", "hi", ts=10**400))))
    assert await post(url, body, signed(body)) == (200, {"accepted": 1})
    [published] = await mine(nc, uid)
    assert before - timedelta(seconds=1) <= published.message.at <= datetime.now(UTC) + timedelta(seconds=1)


async def test_an_id_no_nats_header_can_carry_is_skipped_and_the_rest_of_the_batch_goes(
    nc: NATS, social: tuple[ConnectorRuntime, str], uid: str
) -> None:
    """A CR LF in a ``mid`` wrote headers of the sender's choosing into the published message."""
    runtime, url = social
    events = [
        messaging("PSID_1", f"mid.{uid}.crlf\r\nNats-Expected-Last-Sequence: 5", "injected"),
        messaging("PSID_1", f"mid.{uid}.long" + "x" * 5000, "long"),
        messaging("PSID_1", f"mid.{uid}.good", "good"),
    ]
    body = dumps(page_batch(page_entry(*events)))
    assert await post(url, body, signed(body)) == (200, {"accepted": 1})
    assert [p.message.provider_message_id for p in await mine(nc, uid)] == [f"mid.{uid}.good"]
    assert ignored(runtime)["bad_id"] == 2


async def test_a_message_bigger_than_the_bus_takes_is_413_not_503_for_ever(
    nc: NATS, social: tuple[ConnectorRuntime, str], uid: str
) -> None:
    """Past the server's max_payload the publish failed every time ("unavailable", so Meta
    retried it for 36 h); with the header over it, the server closed the connector's
    connection. Now: 413 before anything of the batch is published, and the bus still works."""
    runtime, url = social
    limit = nc.max_payload
    too_big = [
        [messaging("PSID_1", f"mid.{uid}.text", "x" * limit), messaging("PSID_1", f"mid.{uid}.mate", "ok")],
        [messaging("PSID_1", f"mid.{uid}.ctrl", "\x00" * (limit // 5))],  # escaped: 6 bytes each
    ]
    for events in too_big:
        body = dumps(page_batch(page_entry(*events)))
        status, answer = await post(url, body, signed(body))
        assert status == 413 and "event bus" in answer["error"]
    assert await mine(nc, uid) == []
    body = dumps(page_batch(page_entry(messaging("PSID_1", f"mid.{uid}.after", "hi"))))
    assert await post(url, body, signed(body)) == (200, {"accepted": 1})
    assert [p.message.provider_message_id for p in await mine(nc, uid)] == [f"mid.{uid}.after"]
    assert runtime.metrics["rejected"] == 2


async def test_the_challenge_is_echoed_as_text_a_browser_does_not_sniff(
    social: tuple[ConnectorRuntime, str],
) -> None:
    _, url = social
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "<script>x()</script>"}
    async with aiohttp.ClientSession() as http, http.get(url, params=query) as resp:
        assert (resp.status, resp.content_type) == (200, "text/plain")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert await resp.text() == "<script>x()</script>"
