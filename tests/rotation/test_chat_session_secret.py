"""Rotating the web chat's session_secret keeps every returning visitor the customer they were
(visitor addresses derive from address_secret, set to the old secret) and ends no session
while instances holding either secret run side by side (extra_session_secrets)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connectors.chat import tokens
from connectors.chat.connector import WebChatConnector
from connectors.chat.settings import address_secret, session_secrets
from services import config
from tests.rotation.counting_aesgcm import CountingAESGCM

OLD, NEW = "o" * 40, "n" * 40


def rotated(tmp_path: Path) -> WebChatConnector:
    (tmp_path / "old").write_text(OLD + "\n")
    env = {
        "RELAYDESK_CONNECTOR_CHAT_WIDGET_KEY": "demo-widget-key",
        "RELAYDESK_CONNECTOR_CHAT_SESSION_SECRET": NEW,
        "RELAYDESK_CONNECTOR_CHAT_ADDRESS_SECRET_FILE": str(tmp_path / "old"),
        "RELAYDESK_CONNECTOR_CHAT_EXTRA_SESSION_SECRETS_FILE": str(tmp_path / "old"),
    }
    return WebChatConnector.from_config(config.load(env=env).connectors["chat"])


def test_a_returning_visitor_keeps_her_address(tmp_path: Path) -> None:
    settings = rotated(tmp_path).settings
    visitor = tokens.new_visitor_id()
    before = tokens.visitor_address(OLD, visitor)  # what she was under the old secret
    assert tokens.visitor_address(address_secret(settings), visitor) == before


def test_tokens_sealed_with_the_old_secret_hold_and_new_ones_use_the_new(tmp_path: Path) -> None:
    settings = rotated(tmp_path).settings
    claims = tokens.SessionClaims("visitor:" + "a" * 32, int(time.time()) + 300)
    assert tokens.verify_token(session_secrets(settings), tokens.issue_token(OLD, claims)) == claims
    new = tokens.issue_token(session_secrets(settings)[0], claims)
    with pytest.raises(tokens.TokenError, match="signature invalid"):
        tokens.verify_token(OLD, new)
    with pytest.raises(tokens.TokenError, match="signature invalid"):
        tokens.verify_token(session_secrets(settings), tokens.issue_token("t" * 40, claims))


def test_every_secret_is_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify_token stopped at the first secret that opened: a token sealed with
    session_secret took one decryption, one sealed with an old secret two."""
    monkeypatch.setattr(tokens, "AESGCM", CountingAESGCM)
    claims = tokens.SessionClaims("visitor:" + "a" * 32, int(time.time()) + 300)
    token = tokens.issue_token(NEW, claims)
    CountingAESGCM.decrypted = 0
    assert tokens.verify_token([NEW, OLD], token) == claims
    assert CountingAESGCM.decrypted == 2


def test_an_empty_secret_never_verifies() -> None:
    """One secret given as a string was used even when empty: a token anyone sealed with the
    empty secret was taken (a list dropped empty entries)."""
    claims = tokens.SessionClaims("visitor:" + "a" * 32, int(time.time()) + 300)
    with pytest.raises(tokens.TokenError, match="signature invalid"):
        tokens.verify_token("", tokens.issue_token("", claims))
    with pytest.raises(tokens.TokenError, match="signature invalid"):
        tokens.verify_token([NEW, ""], tokens.issue_token("", claims))
    with pytest.raises(tokens.TokenError, match="malformed"):  # the token's shape is judged first
        tokens.verify_token([NEW, OLD], "v2.x")
