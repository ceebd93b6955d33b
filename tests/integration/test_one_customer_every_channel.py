"""Issue 4's closing check: one person writes by SMS, email, Messenger and web chat; once an
operator has linked their addresses, every message lands on one customer's timeline. Every
message goes through its real connector over a real nats-server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jwt
import pytest

from services.bus.embedded import EmbeddedNats, free_port
from services.config import Config
from tests.integration.system import eventually, running_system, system_config

pytestmark = pytest.mark.integration

META_SECRET = "meta-app-secret"
CHAT_SECRET = "s" * 40
JWT_SECRET = "j" * 40
WIDGET_KEY = "wk_test"


def with_every_channel(config: Config) -> tuple[int, int, int]:
    """Email, Messenger and web chat beside SMS, each on a free port (replies go out by SMS
    only); returns the SMTP, social and chat ports."""
    smtp_port, social_port, chat_port = free_port(), free_port(), free_port()
    config.connectors["email"] = {"port": free_port(), "smtp_port": smtp_port, "domains": ["support.example.com"]}
    config.connectors["social"] = {"port": social_port, "app_secret": META_SECRET, "outbound": False}
    config.connectors["chat"] = {
        "port": chat_port,
        "widget_key": WIDGET_KEY,
        "session_secret": CHAT_SECRET,
        "identity_jwt_secret": JWT_SECRET,
        "outbound": False,
    }
    return smtp_port, social_port, chat_port


def meta_message(psid: str, mid: str, text: str) -> bytes:
    now = int(time.time() * 1000)
    event = {
        "sender": {"id": psid},
        "recipient": {"id": "PAGE_1"},
        "timestamp": now,
        "message": {"mid": mid, "text": text},
    }
    return json.dumps({"object": "page", "entry": [{"id": "PAGE_1", "time": now, "messaging": [event]}]}).encode()


async def test_linked_addresses_put_every_channel_on_one_timeline(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    config = system_config(tmp_path, clean_nats.url)
    smtp_port, social_port, chat_port = with_every_channel(config)
    async with running_system(config, clean_nats) as system:
        # 1. SMS makes the customer.
        assert await system.send_sms("SM" + "e" * 32, "+15551234567", "my invoice is wrong") == 200
        customer_id = await eventually(lambda: system.customer("+15551234567"))

        # 2. An operator links the person's other addresses.
        for identity in ("email:ann@example.com", "social:PSID_ANN", "chat:user:ann-42"):
            status, body = await system.post(f"/v1/customers/{customer_id}/identities", {"identity": identity})
            assert status in (200, 201), body

        # 3. Email through SMTP.
        mail = EmailMessage()
        mail["From"] = "Ann <ann@example.com>"
        mail["To"] = "help@support.example.com"
        mail["Subject"] = "Invoice"
        mail["Message-ID"] = "<ann-every-channel@example.com>"
        mail.set_content("Writing by email as well.")
        await asyncio.to_thread(_send_mail, smtp_port, mail)

        # 4. Messenger through the signed Meta webhook.
        body = meta_message("PSID_ANN", "mid.every.1", "And on Messenger.")
        signature = "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
        async with system.http.post(
            f"http://127.0.0.1:{social_port}/meta/webhook",
            data=body,
            headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
        ) as r:
            assert r.status == 200, await r.text()

        # 5. Web chat as the logged-in user ann-42 (the site's backend signed the identity).
        now = int(time.time())
        identity_token = jwt.encode({"sub": "ann-42", "iat": now, "exp": now + 600}, JWT_SECRET, algorithm="HS256")
        chat = f"http://127.0.0.1:{chat_port}"
        async with system.http.post(
            chat + "/sessions",
            json={"widget_key": WIDGET_KEY, "identity_token": identity_token},
            headers={"Origin": chat},
        ) as r:
            assert r.status == 200, await r.text()
            session = await r.json()
        async with system.http.post(
            chat + "/messages",
            json={"client_msg_id": "c1", "text": "And in the chat."},
            headers={"Authorization": f"Bearer {session['token']}", "Origin": chat},
        ) as r:
            assert r.status == 200, await r.text()

        async def every_channel() -> list[dict[str, Any]] | None:
            status, body = await system.get(f"/v1/customers/{customer_id}/timeline")
            entries = [e for e in body.get("entries", []) if e.get("direction") == "in"] if status == 200 else []
            return entries if {e["channel"] for e in entries} >= {"sms", "email", "social", "chat"} else None

        entries = await eventually(every_channel, timeout=30)
    texts = {e["channel"]: e["text"] for e in entries}
    assert texts["email"].startswith("Writing by email as well.")
    assert texts["social"] == "And on Messenger."
    assert texts["chat"] == "And in the chat."


def _send_mail(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(message)
