"""The sink SDK's pure parts: configuration, Retry-After, Zendesk's webhook signature."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from services.config import load
from services.sinks.freshdesk import TOKEN_HEADER, FreshdeskSink
from services.sinks.runner import enabled_sinks
from services.sinks.sdk import SinkConfigError, Unauthentic, WebhookRequest, registry, retry_after_seconds
from services.sinks.zendesk import SIGNATURE, SIGNATURE_TIMESTAMP, ZendeskSink, sign

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
