"""The sink SDK's pure parts: configuration, Retry-After, Zendesk's webhook signature."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, cast

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from services.config import load
from services.sinks.freshdesk import TOKEN_HEADER, FreshdeskSink
from services.sinks.runner import enabled_sinks
from services.sinks.sdk import (
    Link,
    Malformed,
    SinkConfigError,
    SinkState,
    Unauthentic,
    WebhookRequest,
    registry,
    retry_after_seconds,
)
from services.sinks.zendesk import COMMENT_ADDED, SIGNATURE, SIGNATURE_TIMESTAMP, ZendeskSink, sign

from .freshdesk_fake import freshdesk_config
from .zendesk_fake import SECRET, zendesk_config


def request(body: bytes, **headers: str) -> WebhookRequest:
    return WebhookRequest("POST", "/zendesk/webhook", CIMultiDictProxy(CIMultiDict(headers)), body)


def zendesk() -> ZendeskSink:
    return ZendeskSink.from_config(zendesk_config("http://zendesk.invalid"))


def test_both_sinks_are_installed_entry_points() -> None:
    assert {"zendesk", "freshdesk"} <= set(registry.available())
    assert registry.load("zendesk") is ZendeskSink and registry.load("freshdesk") is FreshdeskSink


def test_a_typo_or_a_missing_secret_in_a_sink_table_is_an_error() -> None:
    with pytest.raises(SinkConfigError, match=r"unknown key 'api_tokn'.*did you mean 'api_token'"):
        ZendeskSink.from_config({**zendesk_config("http://x"), "api_tokn": "t"})
    with pytest.raises(SinkConfigError, match="webhook_secret"):
        ZendeskSink.from_config({**zendesk_config("http://x"), "webhook_secret": ""})
    with pytest.raises(SinkConfigError, match="api_key"):
        FreshdeskSink.from_config({**freshdesk_config("http://x"), "api_key": ""})


def test_sink_secrets_come_from_the_environment() -> None:
    config = load(
        env={
            "RELAYDESK_SINK_ZENDESK_API_TOKEN": "from-env",
            "RELAYDESK_SINK_ZENDESK_SUBDOMAIN": "acme",
            "RELAYDESK_SINK_FRESHDESK_ENABLED": "false",
        }
    )
    assert config.sinks["zendesk"] == {"api_token": "from-env", "subdomain": "acme"}
    assert enabled_sinks(config) == ["zendesk"]


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7", 1.0) == 7.0
    assert retry_after_seconds(None, 1.5) == 1.5
    assert retry_after_seconds("soon", 1.5) == 1.5
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(date, 1.0, now=lambda: now) == 30.0


def test_zendesk_signature_checks_secret_body_and_age() -> None:
    sink = zendesk()
    body = b'{"type":"zen:event-type:ticket.status_changed"}'
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sink.verify(request(body, **{SIGNATURE: sign(SECRET, now, body), SIGNATURE_TIMESTAMP: now}))
    with pytest.raises(Unauthentic, match="bad webhook signature"):
        sink.verify(request(body + b" ", **{SIGNATURE: sign(SECRET, now, body), SIGNATURE_TIMESTAMP: now}))
    with pytest.raises(Unauthentic, match="missing"):
        sink.verify(request(body))
    old = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(Unauthentic, match="tolerance"):
        sink.verify(request(body, **{SIGNATURE: sign(SECRET, old, body), SIGNATURE_TIMESTAMP: old}))


def test_freshdesk_webhook_needs_the_shared_secret() -> None:
    sink = FreshdeskSink.from_config(freshdesk_config("http://freshdesk.invalid"))
    sink.verify(request(b"{}", **{TOKEN_HEADER: "fd-webhook-secret"}))
    with pytest.raises(Unauthentic):
        sink.verify(request(b"{}", **{TOKEN_HEADER: "fd-webhook-secreT"}))


def test_config_check_names_unknown_sinks_keys_and_types() -> None:
    problems = registry.table_problems(
        {"zendsk": {}, "zendesk": {"emial": "x"}, "freshdesk": {"api_key": "k", "port": "eighty"}}
    )
    assert problems[0].startswith("[sinks.zendsk] no installed sink named 'zendsk' (did you mean 'zendesk'?)")
    assert "[sinks.zendesk] unknown key 'emial' (did you mean 'email'?)" in problems
    assert any(p.startswith("[sinks.freshdesk]") and "port" in p for p in problems)
    assert registry.table_problems({"zendesk": zendesk_config("http://x")}) == []


class _LinkedTicket:
    """A SinkState stand-in: ticket 1002 is conversation c1's; nothing is the sink's own."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def conversation_of(self, ticket_id: str) -> Link | None:
        self.asked.append(ticket_id)
        return Link(conversation_id="c1", customer_id="u1", ticket_id="1002", requester_id="7")

    async def is_ours(self, ticket_id: str, comment_id: str, text: str) -> bool:
        return False

    async def mark_relayed(self, comment_id: str, reply_id: str, *, ticket: str = "") -> None:
        self.asked.append(f"relayed.{ticket}.{comment_id}")

    async def relayed(self, comment_id: str, *, ticket: str = "") -> str | None:
        return None


def with_state(sink: ZendeskSink | FreshdeskSink) -> tuple[_LinkedTicket, list[str]]:
    state, replies = _LinkedTicket(), []
    sink.state = cast(SinkState, state)

    async def reply(conversation_id: str, text: str, *, key: str, author: str) -> str:
        replies.append(text)
        return "done"

    sink.reply = reply  # type: ignore[method-assign]
    return state, replies


def zendesk_comment(ticket: Any, body: Any, comment_id: Any = 5) -> bytes:
    comment = {"id": comment_id, "body": body, "is_public": True, "author": {"id": 9, "is_staff": True}}
    return json.dumps({"type": COMMENT_ADDED, "detail": {"id": ticket}, "event": {"comment": comment}}).encode()


@pytest.mark.parametrize("ticket", [">", "1002.*", "a b", "١٠٠٢", "²", True, -1, {"x": 1}])
async def test_a_zendesk_ticket_id_that_is_no_number_is_malformed_naming_the_field(ticket: Any) -> None:
    sink = zendesk()
    state, replies = with_state(sink)
    with pytest.raises(Malformed, match=r"detail\.id"):
        await sink.webhook(request(zendesk_comment(ticket, "hello")))
    assert state.asked == [] and replies == []  # no KV key was made of it


@pytest.mark.parametrize("comment_id", [">", "5 6", "٥"])
async def test_a_zendesk_comment_id_that_is_no_number_is_malformed(comment_id: str) -> None:
    sink = zendesk()
    _, replies = with_state(sink)
    with pytest.raises(Malformed, match=r"event\.comment\.id"):
        await sink.webhook(request(zendesk_comment(1002, "hello", comment_id)))
    assert replies == []


@pytest.mark.parametrize("body", [{"a": 1}, ["x"], 42, True])
async def test_a_zendesk_comment_body_that_is_not_text_is_never_sent(body: Any) -> None:
    sink = zendesk()
    _, replies = with_state(sink)
    with pytest.raises(Malformed, match=r"event\.comment\.body"):
        await sink.webhook(request(zendesk_comment("1002", body)))
    assert replies == []


async def test_a_zendesk_comment_with_a_text_body_is_still_sent() -> None:
    sink = zendesk()
    _, replies = with_state(sink)
    assert (await sink.webhook(request(zendesk_comment("1002", "Fixed it.", "55"))))["acted"] is True
    assert replies == ["Fixed it."]


@pytest.mark.parametrize("ticket", ["١٠٠٢", "²", ">", "1002.*", "a b", 1.5])
async def test_a_freshdesk_ticket_id_must_be_ascii_digits(ticket: Any) -> None:
    sink = FreshdeskSink.from_config(freshdesk_config("http://freshdesk.invalid"))
    state, _ = with_state(sink)
    with pytest.raises(Malformed, match="ticket_id"):
        await sink.webhook(request(json.dumps({"ticket_id": ticket}).encode()))
    assert state.asked == []


@pytest.mark.parametrize("sink", [zendesk(), FreshdeskSink.from_config(freshdesk_config("http://freshdesk.invalid"))])
async def test_json_nested_deeper_than_the_parser_goes_is_malformed(sink: ZendeskSink | FreshdeskSink) -> None:
    with_state(sink)
    with pytest.raises(Malformed, match="nested too deeply"):
        await sink.webhook(request(b"[" * 5000 + b"]" * 5000))
