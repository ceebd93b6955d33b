"""Rotating a provider's webhook secret loses no webhook: during the rotation (and a rolling
restart where two replicas hold different values) a connector accepts what the provider signs
with the old secret and with the new one, set from a list, a comma-separated string, an
environment variable or a secret file; a refusal says the secret may have been rotated."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest
import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from connectors.sdk import Connector, ProviderRequest, Unauthentic
from connectors.sdk.signatures import secret_list
from connectors.sms import signature as twilio_signature
from connectors.sms.connector import TwilioSmsConnector
from connectors.social import signature as meta_signature
from connectors.social.connector import MetaConnector
from connectors.voice.connector import TwilioVoiceConnector
from services import config
from services.delivery import slack_signing
from services.sinks.freshdesk import TOKEN_HEADER, FreshdeskSink
from services.sinks.sdk import Unauthentic as SinkUnauthentic
from services.sinks.sdk import WebhookRequest
from services.sinks.zendesk import SIGNATURE, SIGNATURE_TIMESTAMP, ZendeskSink, sign
from tests.sinks.freshdesk_fake import freshdesk_config
from tests.sinks.zendesk_fake import zendesk_config

OLD, NEW = "old-auth-token-0123456789abcdef", "new-auth-token-fedcba9876543210"
FORM = {"MessageSid": "SM" + "1" * 32, "From": "+15550001111", "To": "+15550002222", "Body": "hi"}


def twilio_request(token: str, path: str = "/twilio/sms") -> ProviderRequest:
    url = f"https://relay.example{path}"
    headers = CIMultiDict(
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature.compute(token, url, FORM),
        }
    )
    return ProviderRequest("POST", "https", "relay.example", path, CIMultiDictProxy(headers), urlencode(FORM).encode())


@pytest.mark.parametrize("connector", [TwilioSmsConnector, TwilioVoiceConnector])
@pytest.mark.parametrize("extra", [[OLD], OLD, f" {OLD} , another-one"])
def test_twilio_accepts_the_other_token_while_rotating(connector: type[Connector], extra: object) -> None:
    rotated = connector.from_config({"auth_token": NEW, "extra_auth_tokens": extra})
    rotated.verify(twilio_request(OLD))  # Twilio still signs with the old primary
    rotated.verify(twilio_request(NEW))  # promoted
    with pytest.raises(Unauthentic, match="rotated\\? list the other in extra_auth_tokens"):
        rotated.verify(twilio_request("a-third-token-nobody-knows-000"))


def test_twilio_logs_which_extra_token_signed() -> None:
    """So the operator sees when the old token stops being used; the primary logs nothing."""
    connector = TwilioSmsConnector.from_config({"auth_token": NEW, "extra_auth_tokens": ["", "second", OLD]})
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))  # the line is info
    try:
        with structlog.testing.capture_logs() as logs:
            connector.verify(twilio_request(NEW))
            connector.verify(twilio_request(OLD))
    finally:
        structlog.configure(**saved)
    signed = [entry for entry in logs if entry["event"] == "twilio.signed_with_extra_token"]
    assert [(entry["connector"], entry["index"]) for entry in signed] == [("sms", 1)]


def test_extra_tokens_are_never_used_to_send() -> None:
    connector = TwilioSmsConnector.from_config({"auth_token": NEW, "extra_auth_tokens": OLD})
    assert connector.settings.auth_token == NEW


def test_twilio_extra_tokens_from_a_secret_file(tmp_path: Path) -> None:
    """Containers read secrets from files: the old token comes the same way as the new."""
    (tmp_path / "old").write_text(OLD + "\n")
    env = {"RELAYDESK_TWILIO_AUTH_TOKEN": NEW, "RELAYDESK_CONNECTOR_SMS_EXTRA_AUTH_TOKENS_FILE": str(tmp_path / "old")}
    cfg = config.load(env=env)
    connector = TwilioSmsConnector.from_config(cfg.connectors["sms"])
    connector.verify(twilio_request(OLD))


def meta_request(secret: str) -> ProviderRequest:
    body = b'{"object": "page", "entry": []}'
    headers = CIMultiDict(
        {"Content-Type": "application/json", "X-Hub-Signature-256": meta_signature.sign(secret, body)}
    )
    return ProviderRequest("POST", "https", "relay.example", "/meta/webhook", CIMultiDictProxy(headers), body)


def test_meta_extra_app_secrets_from_the_environment(tmp_path: Path) -> None:
    """``extra_app_secrets`` was a list only: no environment variable or secret file could set
    it, so a container could not keep the old app secret while Meta moved to the new one."""
    (tmp_path / "old").write_text(OLD + "\n")
    env = {"RELAYDESK_META_APP_SECRET": NEW, "RELAYDESK_CONNECTOR_SOCIAL_EXTRA_APP_SECRETS_FILE": str(tmp_path / "old")}
    cfg = config.load(env=env)
    connector = MetaConnector.from_config(cfg.connectors["social"])
    connector.verify(meta_request(OLD))
    connector.verify(meta_request(NEW))
    with pytest.raises(Unauthentic, match="rotated"):
        connector.verify(meta_request("a-third-secret"))


def test_slack_accepts_the_other_signing_secret_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "old").write_text(OLD + "\n")
    env = {"RELAYDESK_SLACK_SIGNING_SECRET": NEW, "RELAYDESK_SLACK_EXTRA_SIGNING_SECRETS_FILE": str(tmp_path / "old")}
    slack = config.load(env=env).slack
    body = b"payload=%7B%7D"

    def refusal(secret: str) -> str | None:
        headers = slack_signing.headers(secret, body)
        return slack_signing.refusal(
            slack.signing_secret,
            headers[slack_signing.TIMESTAMP],
            headers[slack_signing.SIGNATURE],
            body,
            extra=secret_list(slack.extra_signing_secrets),
        )

    assert refusal(OLD) is None
    assert refusal(NEW) is None
    assert refusal("a-third-secret") == slack_signing.BAD_SIGNATURE


def sink_request(path: str, body: bytes, **headers: str) -> WebhookRequest:
    return WebhookRequest("POST", path, CIMultiDictProxy(CIMultiDict(headers)), body)


@pytest.mark.parametrize("extra", [[OLD], OLD])
def test_helpdesk_webhooks_signed_with_the_other_secret_are_taken(extra: object) -> None:
    body = b'{"type": "zen:event-type:ticket.comment_added"}'
    zendesk = ZendeskSink.from_config(
        {**zendesk_config("http://x"), "webhook_secret": NEW, "extra_webhook_secrets": extra}
    )
    stamp = datetime.now(UTC).isoformat()
    for secret in (OLD, NEW):
        zendesk.verify(
            sink_request("/zendesk/webhook", body, **{SIGNATURE: sign(secret, stamp, body), SIGNATURE_TIMESTAMP: stamp})
        )
    with pytest.raises(SinkUnauthentic, match="rotated"):
        zendesk.verify(
            sink_request(
                "/zendesk/webhook", body, **{SIGNATURE: sign("third", stamp, body), SIGNATURE_TIMESTAMP: stamp}
            )
        )

    freshdesk = FreshdeskSink.from_config(
        {**freshdesk_config("http://x"), "webhook_secret": NEW, "extra_webhook_secrets": extra}
    )
    for secret in (OLD, NEW):
        freshdesk.verify(sink_request("/freshdesk/webhook", b"{}", **{TOKEN_HEADER: secret}))
    with pytest.raises(SinkUnauthentic, match="rotated"):
        freshdesk.verify(sink_request("/freshdesk/webhook", b"{}", **{TOKEN_HEADER: "third"}))
