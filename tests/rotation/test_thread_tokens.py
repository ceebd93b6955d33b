"""Rotating the email connector's thread_token_secret keeps threading the replies to mail sent
before: tokens made with the old secret, listed in extra_thread_token_secrets (from a secret
file too), still name their conversation, in the plus address and in the subject tag; tokens
are made with the new secret only."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from connectors.email import threads
from connectors.email.connector import EmailConnector
from connectors.email.parse import parse_email
from services import config

OLD, NEW = "old-thread-secret-0123456789", "new-thread-secret-9876543210"


def reply_to(token: str) -> bytes:
    return (
        "From: Cleo <cleo@customer.example>\r\nTo: support+" + token + "@support.example\r\n"
        "Subject: Re: your order [#" + token + "]\r\nMessage-ID: <m1@customer.example>\r\n\r\nThanks!\r\n"
    ).encode()


def test_replies_to_tokens_of_the_old_secret_still_thread(tmp_path: Path) -> None:
    (tmp_path / "old").write_text(OLD + "\n")
    env = {
        "RELAYDESK_CONNECTOR_EMAIL_DOMAINS": "support.example",
        "RELAYDESK_CONNECTOR_EMAIL_THREAD_TOKEN_SECRET": NEW,
        "RELAYDESK_CONNECTOR_EMAIL_EXTRA_THREAD_TOKEN_SECRETS_FILE": str(tmp_path / "old"),
    }
    settings = EmailConnector.from_config(config.load(env=env).connectors["email"]).settings
    old_token = threads.make_token("cv_1", OLD)
    parsed = parse_email(
        reply_to(old_token),
        recipients=[f"support+{old_token}@support.example"],
        settings=settings,
        received_at=datetime.now(UTC),
        source="smtp",
    )
    assert parsed.message.metadata["thread_token"] == "cv_1"
    assert parsed.message.metadata["subject_tag"] == "cv_1"
    forged = threads.make_token("cv_1", "a-third-secret")
    assert threads.read_token(forged, NEW, [OLD]) is None
    assert threads.read_token(threads.make_token("cv_2", NEW), NEW, [OLD]) == "cv_2"
