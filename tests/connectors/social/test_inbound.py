"""The Meta webhook over a real nats-server: HMAC-signed batches, echoes, duplicates, statuses,
public comments, verification, bad signatures, malformed bodies, NATS down.

These share the session's nats-server, so the outbound worker stays off (its durable
work-queue consumer would outlive the test); outbound runs on servers of its own."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import structlog.testing
from nats.aio.client import Client as NATS

from connectors.sdk import registry
from connectors.sdk.conformance.helpers import Published, read_inbound
from connectors.sdk.runtime import ConnectorRuntime
from connectors.social.connector import MetaConnector, MetaSettings
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats

from .payloads import (
    APP_SECRET,
    IG_ID,
    PAGE_ID,
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    dumps,
    feed_comment,
    ig_comment,
    messaging,
    page_batch,
    page_entry,
    signed,
    wa_status,
    wa_text,
    whatsapp,
)

pytestmark = pytest.mark.integration


def settings(**extra: Any) -> dict[str, Any]:
    return {
        "port": 0,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "ack_timeout": 1.0,
        "outbound": False,
        **extra,
    }


@pytest.fixture
async def social(nc: NATS) -> AsyncIterator[tuple[ConnectorRuntime, str]]:
    runtime = ConnectorRuntime(MetaConnector.from_config(settings()), nc)
    [base] = await runtime.start()
    try:
        yield runtime, base + "/meta/webhook"
    finally:
        await runtime.stop()


def ignored(runtime: ConnectorRuntime) -> Counter[str]:
    connector = runtime.connector
    assert isinstance(connector, MetaConnector)
    return connector.ignored


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def mine(nc: NATS, uid: str) -> list[Published]:
    """What was published on rd.inbound.social with this test's ids."""
    return [p for p in await read_inbound(nc.jetstream(), "social") if uid in p.message.provider_message_id]


def test_registry_loads_social() -> None:
    assert registry.load("social") is MetaConnector
    s = MetaConnector.from_config({}).settings
    assert isinstance(s, MetaSettings)
    assert (s.port, s.graph_base_url, s.graph_version, s.window_hours) == (
        8082,
        "https://graph.facebook.com",
        "v21.0",
        24.0,
    )


async def test_messenger_batch_publishes_each_customer_message_once(
    nc: NATS, social: tuple[ConnectorRuntime, str], uid: str
) -> None:
    runtime, url = social
    payload = page_batch(
        page_entry(
            messaging("PSID_1", f"mid.{uid}.1", "My order is late"),
            messaging("PSID_1", f"mid.{uid}.echo", "Sorry to hear that", echo=True),
        ),
        page_entry(
            messaging("PSID_2", f"mid.{uid}.2", "Refund, please — ¿sí?"),
            messaging("PSID_1", f"mid.{uid}.1", "My order is late"),  # duplicate mid in the batch
        ),
        page_entry(messaging("PSID_3", f"mid.{uid}.3", "standby message"), key="standby"),
    )
    body = dumps(payload)
    status, answer = await post(url, body, signed(body))
    assert status == 200 and answer == {"accepted": 3}
    published = await mine(nc, uid)
    assert sorted(p.message.provider_message_id for p in published) == [f"mid.{uid}.{n}" for n in (1, 2, 3)]
    assert all(p.msg_id == f"social:{p.message.provider_message_id}" for p in published)
    by_id = {p.message.provider_message_id: p.message for p in published}
    assert by_id[f"mid.{uid}.2"].text == "Refund, please — ¿sí?"  # \uXXXX escapes decoded
    assert by_id[f"mid.{uid}.2"].metadata["platform"] == "messenger"
    assert by_id[f"mid.{uid}.2"].metadata["page_id"] == PAGE_ID
    assert ignored(runtime)["echo"] == 1

    # Meta retries the whole batch: nothing new.
    status, _ = await post(url, body, signed(body))
    assert status == 200
    assert len(await mine(nc, uid)) == 3
    assert runtime.metrics["duplicates"] == 3


async def test_whatsapp_text_and_statuses(nc: NATS, social: tuple[ConnectorRuntime, str], uid: str) -> None:
    runtime, url = social
    body = dumps(whatsapp([wa_text(f"wamid.{uid}", "¿Dónde está mi pedido?")]))
    assert (await post(url, body, signed(body)))[0] == 200
    [item] = await mine(nc, uid)
    m = item.message
    assert item.msg_id == f"social:wamid.{uid}"
    assert (m.sender, m.sender_name, m.recipient) == ("+15551230000", "Ana Pérez", PHONE_NUMBER_ID)
    assert m.metadata["platform"] == "whatsapp"  # phone identity, shared with SMS
    assert m.metadata["phone_number_id"] == PHONE_NUMBER_ID

    receipts = dumps(whatsapp(statuses=[wa_status(f"wamid.{uid}.out"), wa_status(f"wamid.{uid}.out", "read")]))
    status, answer = await post(url, receipts, signed(receipts))
    assert (status, answer) == (200, {"accepted": 0})
    assert len(await mine(nc, uid)) == 1, "delivery receipts are not customer messages"
    assert ignored(runtime)["status"] == 2


async def test_instagram_message(nc: NATS, social: tuple[ConnectorRuntime, str], uid: str) -> None:
    _, url = social
    body = dumps(
        page_batch(page_entry(messaging("IGSID_9", f"ig.{uid}", "hi!", page=IG_ID), page=IG_ID), obj="instagram")
    )
    assert (await post(url, body, signed(body)))[0] == 200
    [item] = await mine(nc, uid)
    assert item.message.sender == "IGSID_9"
    assert item.message.metadata == {
        "platform": "instagram",
        "kind": "message",
        "page_id": IG_ID,
        "provider_at": "2023-11-14T22:13:20+00:00",  # Meta's time: metadata only
    }
    assert item.message.public is False


async def test_public_comments_are_public(nc: NATS, social: tuple[ConnectorRuntime, str], uid: str) -> None:
    _, url = social
    for payload in (feed_comment(f"POST_1_{uid}"), ig_comment(f"IGC_{uid}")):
        body = dumps(payload)
        assert (await post(url, body, signed(body)))[0] == 200
    published = {p.message.provider_message_id: p.message for p in await mine(nc, uid)}
    assert set(published) == {f"POST_1_{uid}", f"IGC_{uid}"}
    fb, ig = published[f"POST_1_{uid}"], published[f"IGC_{uid}"]
    assert fb.public and ig.public
    assert (fb.metadata["platform"], fb.metadata["comment_id"]) == ("facebook", f"POST_1_{uid}")
    assert (ig.metadata["platform"], ig.metadata["kind"]) == ("instagram", "comment")


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (f"hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444", 200),
        ("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444", 403),
        (f"hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1", 403),
        ("hub.challenge=1", 403),
    ],
)
async def test_get_verification(social: tuple[ConnectorRuntime, str], query: str, status: int) -> None:
    _, url = social
    async with aiohttp.ClientSession() as http, http.get(f"{url}?{query}") as resp:
        assert resp.status == status
        if status == 200:
            assert resp.content_type == "text/plain"
            assert await resp.text() == "1158201444"


async def test_verification_needs_a_configured_token(nc: NATS) -> None:
    runtime = ConnectorRuntime(MetaConnector.from_config(settings(verify_token="")), nc)
    [base] = await runtime.start()
    try:
        query = "hub.mode=subscribe&hub.verify_token=&hub.challenge=1"
        async with aiohttp.ClientSession() as http, http.get(f"{base}/meta/webhook?{query}") as resp:
            assert resp.status == 403
    finally:
        await runtime.stop()


@pytest.mark.parametrize("case", ["missing", "wrong secret", "tampered body", "sha1 header only"])
async def test_bad_signature_is_403_and_publishes_nothing(
    nc: NATS, social: tuple[ConnectorRuntime, str], uid: str, case: str
) -> None:
    runtime, url = social
    body = dumps(page_batch(page_entry(messaging("PSID_1", f"mid.{uid}", "hi"))))
    headers = signed(body)
    if case == "missing":
        del headers["X-Hub-Signature-256"]
    elif case == "wrong secret":
        headers = signed(body, "guessed")
    elif case == "tampered body":
        body = body.replace(b"hi", b"yo")
    else:
        headers["X-Hub-Signature"] = "sha1=" + headers.pop("X-Hub-Signature-256")[7:47]
    status, answer = await post(url, body, headers)
    assert status == 403 and "error" in answer
    assert await mine(nc, uid) == []
    assert runtime.metrics["rejected"] == 1


async def test_no_app_secret_rejects_everything(nc: NATS, uid: str) -> None:
    runtime = ConnectorRuntime(MetaConnector.from_config(settings(app_secret="")), nc)
    [base] = await runtime.start()
    try:
        body = dumps(page_batch(page_entry(messaging("PSID_1", f"mid.{uid}", "hi"))))
        assert (await post(base + "/meta/webhook", body, signed(body, "")))[0] == 403
    finally:
        await runtime.stop()
    assert await mine(nc, uid) == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"object":"page"}',
        b'{"object":"page","entry":"x"}',
        "\u00e9".encode("latin-1"),
        b'{"a":' * 10000,  # nested deeper than the JSON parser goes (a RecursionError, once a 500)
        b"[" * 100000,
    ],
)
async def test_malformed_is_400_and_publishes_nothing(
    nc: NATS, social: tuple[ConnectorRuntime, str], body: bytes
) -> None:
    runtime, url = social
    before = len(await read_inbound(nc.jetstream(), "social"))
    status, answer = await post(url, body, signed(body))
    assert status == 400 and "error" in answer
    assert len(await read_inbound(nc.jetstream(), "social")) == before
    assert runtime.metrics["published"] == 0


@pytest.mark.parametrize("encoding", ["deflate", "gzip"])
async def test_a_body_that_cannot_be_decoded_is_400_before_the_signature(
    nc: NATS, social: tuple[ConnectorRuntime, str], encoding: str
) -> None:
    runtime, url = social
    with structlog.testing.capture_logs() as logs:
        status, answer = await post(url, b"garbage", {**signed(b"garbage"), "Content-Encoding": encoding})
    assert (status, answer) == (400, {"error": f"the request body cannot be decoded (Content-Encoding: {encoding})"})
    assert [e["log_level"] for e in logs if e["event"].startswith("inbound.")] == ["warning"]
    assert runtime.metrics["published"] == 0


async def test_nats_down_is_503(tmp_path: Path, uid: str) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "js")
    server.start()
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        await ensure_streams(client.jetstream())
        runtime = ConnectorRuntime(MetaConnector.from_config(settings(ack_timeout=0.5)), client)
        [base] = await runtime.start()
        try:
            server.stop()
            body = dumps(page_batch(page_entry(*(messaging("PSID_1", f"mid.{uid}.{n}", "hi") for n in range(5)))))
            status, answer = await post(base + "/meta/webhook", body, signed(body))
            assert status == 503 and answer.get("retryable") is True
            assert runtime.metrics["published"] == 0
        finally:
            await runtime.stop()
    finally:
        with contextlib.suppress(Exception):  # closing a dead transport may raise
            await client.close()
        server.stop()


async def test_logs_carry_ids_but_no_bodies_numbers_or_secrets(nc: NATS, uid: str) -> None:
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            runtime = ConnectorRuntime(MetaConnector.from_config(settings()), nc)
            [base] = await runtime.start()
            try:
                url = base + "/meta/webhook"
                body = dumps(whatsapp([wa_text(f"wamid.{uid}", "secret order 4711")], statuses=[wa_status("w.x")]))
                assert (await post(url, body, signed(body)))[0] == 200
                assert (await post(url, body, signed(body, "nope")))[0] == 403
            finally:
                await runtime.stop()
    finally:
        structlog.configure(**old)
    assert any(e["event"] == "inbound.published" and e["provider_message_id"] == f"wamid.{uid}" for e in logs)
    assert any(e["event"] == "social.batch" and e.get("not_routed_status") == 1 for e in logs)
    dump = repr(logs)
    for secret in ("15551230000", "Ana P", "secret order", APP_SECRET):
        assert secret not in dump


async def test_a_full_batch_of_1000_updates(nc: NATS, social: tuple[ConnectorRuntime, str], uid: str) -> None:
    """Meta batches up to 1000 updates per POST: every one is acked before the 200."""
    runtime, url = social
    entries = [
        page_entry(*(messaging(f"PSID_{e}", f"mid.{uid}.{e}.{i}", f"message {i}") for i in range(10)))
        for e in range(100)
    ]
    body = dumps(page_batch(*entries))
    assert len(body) < 1024 * 1024 < runtime.connector.settings.max_body_bytes
    status, answer = await post(url, body, signed(body))
    assert (status, answer) == (200, {"accepted": 1000})
    assert runtime.metrics["published"] == 1000
    assert len(await mine(nc, uid)) == 1000


async def test_extra_app_secrets_for_instagram_apps_and_rotation(nc: NATS, uid: str) -> None:
    runtime = ConnectorRuntime(MetaConnector.from_config(settings(extra_app_secrets=["ig-app-secret"])), nc)
    [base] = await runtime.start()
    try:
        url = base + "/meta/webhook"
        body = dumps(
            page_batch(page_entry(messaging("IGSID", f"ig.{uid}", "hi", page=IG_ID), page=IG_ID), obj="instagram")
        )
        assert (await post(url, body, signed(body, "ig-app-secret")))[0] == 200
        assert (await post(url, body, signed(body, APP_SECRET)))[0] == 200
        assert (await post(url, body, signed(body, "other")))[0] == 403
    finally:
        await runtime.stop()
    assert len(await mine(nc, uid)) == 1
