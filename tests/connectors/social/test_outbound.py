"""``MetaConnector.deliver`` against a local fake Graph API: Send API shapes, tokens, public
replies, Meta's errors (permanent vs retried) and the 24-hour window."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from connectors.sdk.conformance import FakeProvider
from connectors.social.connector import MetaConnector
from events.model import DeliverReply

from .payloads import ACCESS_TOKEN, IG_ID, PAGE_ID, PHONE_NUMBER_ID

VERSION = "v21.0"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def reply(contact: str = "PSID_1", text: str = "We are on it", **metadata: str) -> DeliverReply:
    return DeliverReply(
        conversation_id="conv1",
        customer_id="cus1",
        channel="social",
        reply_id="rep1",
        contact=contact,
        text=text,
        metadata=metadata,
    )


def ago(hours: float) -> str:
    return (NOW - timedelta(hours=hours)).isoformat()


@pytest.fixture
async def graph() -> AsyncIterator[FakeProvider]:
    async def ok(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("messaging_product") == "whatsapp":
            return web.json_response({"messages": [{"id": "wamid.OUT"}]})
        if request.path.endswith("/messages"):
            return web.json_response({"recipient_id": "x", "message_id": "m_OUT"})
        return web.json_response({"id": "COMMENT_OUT"})

    fake = FakeProvider(handler=ok)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def meta(graph: FakeProvider) -> AsyncIterator[MetaConnector]:
    c = MetaConnector.from_config(
        {"access_token": ACCESS_TOKEN, "graph_base_url": graph.url + "/", "graph_version": VERSION}
    )
    c.clock = lambda: NOW
    await c.open_http()
    try:
        yield c
    finally:
        await c.close_http()


def sent(graph: FakeProvider, i: int = 0) -> tuple[str, str, Any]:
    r = graph.requests[i]
    return r.path, r.headers["Authorization"], json.loads(r.body)


async def test_messenger_send_api_shape(meta: MetaConnector, graph: FakeProvider) -> None:
    result = await meta.deliver(reply(platform="messenger", page_id=PAGE_ID, last_customer_message_at=ago(1)))
    assert result.ok and result.provider_message_id == "m_OUT"
    assert sent(graph) == (
        f"/{VERSION}/{PAGE_ID}/messages",
        f"Bearer {ACCESS_TOKEN}",
        {"recipient": {"id": "PSID_1"}, "messaging_type": "RESPONSE", "message": {"text": "We are on it"}},
    )
    assert graph.requests[0].headers["Content-Type"].startswith("application/json")


async def test_instagram_uses_its_account_id_and_page_token(meta: MetaConnector, graph: FakeProvider) -> None:
    meta.settings.page_tokens = {IG_ID: "IG-TOKEN"}
    result = await meta.deliver(reply("IGSID_9", platform="instagram", page_id=IG_ID))
    assert result.ok
    path, auth, body = sent(graph)
    assert (path, auth) == (f"/{VERSION}/{IG_ID}/messages", "Bearer IG-TOKEN")
    assert body["recipient"] == {"id": "IGSID_9"}


async def test_whatsapp_send_api_shape(meta: MetaConnector, graph: FakeProvider) -> None:
    result = await meta.deliver(
        reply("+15551230000", "Hola ✓", platform="whatsapp", phone_number_id=PHONE_NUMBER_ID, context_message_id="w1")
    )
    assert result.ok and result.provider_message_id == "wamid.OUT"
    assert sent(graph) == (
        f"/{VERSION}/{PHONE_NUMBER_ID}/messages",
        f"Bearer {ACCESS_TOKEN}",
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "15551230000",
            "type": "text",
            "text": {"body": "Hola ✓"},
            "context": {"message_id": "w1"},
        },
    )


async def test_platform_and_ids_fall_back_to_contact_and_settings(meta: MetaConnector, graph: FakeProvider) -> None:
    assert not (await meta.deliver(reply("+15551230000"))).ok  # whatsapp, but no phone_number_id anywhere
    meta.settings.phone_number_id = PHONE_NUMBER_ID
    meta.settings.page_id = PAGE_ID
    assert (await meta.deliver(reply("+15551230000"))).ok
    assert (await meta.deliver(reply("PSID_1"))).ok
    assert [r.path for r in graph.requests] == [
        f"/{VERSION}/{PHONE_NUMBER_ID}/messages",
        f"/{VERSION}/{PAGE_ID}/messages",
    ]


@pytest.mark.parametrize(
    ("metadata", "path", "body"),
    [
        (
            {"platform": "facebook", "kind": "comment", "page_id": PAGE_ID, "comment_id": "P_1_C_1"},
            f"/{VERSION}/P_1_C_1/comments",
            {"message": "We are on it"},
        ),
        (
            {"platform": "instagram", "kind": "comment", "page_id": IG_ID, "comment_id": "IGC_1"},
            f"/{VERSION}/IGC_1/replies",
            {"message": "We are on it"},
        ),
        (
            {
                "platform": "facebook",
                "kind": "comment",
                "page_id": PAGE_ID,
                "comment_id": "P_1_C_1",
                "reply_mode": "private",
            },
            f"/{VERSION}/{PAGE_ID}/messages",
            {"recipient": {"comment_id": "P_1_C_1"}, "message": {"text": "We are on it"}},
        ),
    ],
)
async def test_public_replies(
    meta: MetaConnector, graph: FakeProvider, metadata: dict[str, str], path: str, body: dict[str, Any]
) -> None:
    # A public reply has no 24-hour window.
    result = await meta.deliver(reply("USER_1", **metadata, last_customer_message_at=ago(100)))
    assert result.ok, result.reason
    assert sent(graph)[0] == path and sent(graph)[2] == body


@pytest.mark.parametrize(
    ("status", "error", "retryable", "expect"),
    [
        (
            400,
            {"message": "(#100) No matching user found", "code": 100, "error_subcode": 2018001},
            False,
            "No matching",
        ),
        (401, {"message": "Invalid OAuth access token.", "code": 190}, False, "meta 401 error 190"),
        (400, {"message": "(#4) Application request limit reached", "code": 4}, True, "limit"),
        (429, {"message": "Rate limit hit", "code": 130429}, True, "Rate limit"),
        (500, {"message": "An unknown error occurred", "code": 1}, True, "meta 500"),
        (503, None, True, "meta 503"),
    ],
)
async def test_meta_errors(
    meta: MetaConnector,
    graph: FakeProvider,
    status: int,
    error: dict[str, Any] | None,
    retryable: bool,
    expect: str,
) -> None:
    async def failing(_request: web.Request) -> web.StreamResponse:
        if error is None:
            return web.Response(status=status, text="<html>upstream</html>")
        return web.json_response({"error": {"type": "OAuthException", "fbtrace_id": "A1", **error}}, status=status)

    graph.handler = failing
    result = await meta.deliver(reply(platform="messenger", page_id=PAGE_ID))
    assert not result.ok and result.retryable is retryable
    assert expect in result.reason


@pytest.mark.parametrize(
    ("status", "error", "headers", "wait"),
    [
        # Meta seldom sends Retry-After: its usage header says when access comes back (minutes).
        (
            400,
            {"message": "(#80007) Rate limit hit", "code": 80007},
            {"X-Business-Use-Case-Usage": '{"1234": [{"type": "whatsapp", "estimated_time_to_regain_access": 2}]}'},
            120.0,
        ),
        (429, {"message": "Rate limit hit", "code": 130429}, {"Retry-After": "7"}, 7.0),
        # Too many messages to one user: WhatsApp's pair limit allows one about every 6 s.
        (400, {"message": "(#131056) Pair rate limit hit", "code": 131056}, {}, 6.0),
        (500, {"message": "An unknown error occurred", "code": 1}, {}, None),
        # A refusal is not retried, whatever wait it names.
        (400, {"message": "(#100) Invalid parameter", "code": 100}, {"Retry-After": "30"}, None),
    ],
)
async def test_a_throttled_reply_is_not_retried_sooner_than_meta_asks(
    meta: MetaConnector,
    graph: FakeProvider,
    status: int,
    error: dict[str, Any],
    headers: dict[str, str],
    wait: float | None,
) -> None:
    """Found by an outage audit: Meta's rate limits were retried within ~3.5 s, inside the
    window Meta asked to be left alone for, so each reply written meanwhile failed."""

    async def throttled(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": error}, status=status, headers=headers)

    graph.handler = throttled
    result = await meta.deliver(reply(platform="messenger", page_id=PAGE_ID))
    assert not result.ok and result.retry_after == wait


async def test_meta_window_refusal_is_a_clear_reason(meta: MetaConnector, graph: FakeProvider) -> None:
    async def refused(_request: web.Request) -> web.StreamResponse:
        error = {
            "message": "Re-engagement message",
            "code": 131047,
            "error_data": {"details": "Message failed to send because more than 24 hours have passed"},
        }
        return web.json_response({"error": error}, status=400)

    graph.handler = refused
    # No last_customer_message_at: the connector cannot know, Meta enforces the window.
    result = await meta.deliver(reply("+15551230000", platform="whatsapp", phone_number_id=PHONE_NUMBER_ID))
    assert not result.ok and not result.retryable
    assert result.reason.startswith("outside the 24-hour messaging window; WhatsApp needs an approved template")
    assert "more than 24 hours" in result.reason


async def test_outside_the_window_nothing_is_sent(meta: MetaConnector, graph: FakeProvider) -> None:
    wa = await meta.deliver(
        reply("+15551230000", platform="whatsapp", phone_number_id=PHONE_NUMBER_ID, last_customer_message_at=ago(24.1))
    )
    assert not wa.ok and not wa.retryable
    assert "outside the 24-hour messaging window" in wa.reason and "template" in wa.reason
    fb = await meta.deliver(reply(platform="messenger", page_id=PAGE_ID, last_customer_message_at=ago(30)))
    assert not fb.ok and "outside the 24-hour messaging window" in fb.reason
    bad = await meta.deliver(reply(platform="messenger", page_id=PAGE_ID, last_customer_message_at="last tuesday"))
    assert not bad.ok and "ISO 8601" in bad.reason
    assert graph.requests == []


async def test_human_agent_tag_after_the_window(meta: MetaConnector, graph: FakeProvider) -> None:
    meta.settings.human_agent_tag = True
    result = await meta.deliver(reply(platform="messenger", page_id=PAGE_ID, last_customer_message_at=ago(72)))
    assert result.ok
    body = sent(graph)[2]
    assert (body["messaging_type"], body["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")


async def test_window_hours_setting(meta: MetaConnector, graph: FakeProvider) -> None:
    meta.settings.window_hours = 2
    result = await meta.deliver(reply(platform="messenger", page_id=PAGE_ID, last_customer_message_at=ago(3)))
    assert not result.ok and "2-hour" in result.reason
    assert graph.requests == []


@pytest.mark.parametrize(
    ("contact", "text", "metadata", "reason"),
    [
        ("PSID_1", "x" * 2001, {"platform": "messenger", "page_id": PAGE_ID}, "at most 2000"),
        # Counted as Meta counts, in UTF-16 units (as the API does): 1,001 code points, 2,002 units.
        ("PSID_1", "😀" * 1001, {"platform": "messenger", "page_id": PAGE_ID}, "the reply is 2002 characters"),
        ("PSID_1", "   ", {"platform": "messenger", "page_id": PAGE_ID}, "empty"),
        ("PSID_1", "hi", {"platform": "telegram"}, "unknown platform"),
        ("PSID_1", "hi", {"platform": "messenger", "page_id": "../../me"}, "page_id"),
        ("PSID_1", "hi", {"platform": "facebook", "kind": "comment"}, "comment_id"),
        ("PSID_1", "hi", {"platform": "facebook"}, "kind comment or post"),
    ],
)
async def test_bad_replies_fail_without_calling_meta(
    meta: MetaConnector, graph: FakeProvider, contact: str, text: str, metadata: dict[str, str], reason: str
) -> None:
    result = await meta.deliver(reply(contact, text, **metadata))
    assert not result.ok and not result.retryable
    assert reason in result.reason
    assert graph.requests == []


async def test_no_access_token_is_a_clear_failure(meta: MetaConnector, graph: FakeProvider) -> None:
    meta.settings.access_token = ""
    result = await meta.deliver(reply(platform="messenger", page_id=PAGE_ID))
    assert not result.ok and not result.retryable and "no access_token" in result.reason
    assert graph.requests == []
