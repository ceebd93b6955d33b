"""Language hints from the connectors: the chat widget's browser and page language, an email's
``Content-Language``. They reach intake as ``InboundMessage.metadata`` (``browser_language``,
``page_language``, ``locale``) and decide a one-word message's language."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from connectors.chat import tokens
from connectors.chat.language import language_hints, language_tag
from connectors.email.connector import EmailConnector
from connectors.email.parse import parse_email
from connectors.email.settings import EmailSettings
from connectors.sdk.runtime import ConnectorRuntime
from services.bus.embedded import EmbeddedNats, free_port
from services.config import AgentSeed
from tests.integration.system import eventually, running_system, system_config

from .helpers import SECRET, SITE, WIDGET_KEY, chat_socket, inbound_for, open_session, recv

NOW = datetime(2026, 12, 5, tzinfo=UTC)


@pytest.mark.parametrize("tag", ["de", "de-DE", "pt_BR", "es-419", "zh-Hant-TW", "x" * 2 + "-" + "a" * 8])
def test_language_tags_are_kept(tag: str) -> None:
    assert language_tag(tag) == tag


@pytest.mark.parametrize(
    "value",
    ["", "d", "de DE", "de-", "<script>", "de-DE;q=0.9", "de-DE,en", "de-" + "abcdefgh-" * 4 + "x", 42, None, ["de"]],
)
def test_anything_but_a_language_tag_is_dropped(value: object) -> None:
    assert language_tag(value) is None


def test_hints_are_keyed_as_intake_reads_them_and_invalid_ones_dropped() -> None:
    body: dict[str, object] = {"browser_language": "de-DE", "page_language": "not a tag", "text": "Hallo"}
    assert language_hints(body) == {"browser_language": "de-DE"}
    assert language_hints({"page_language": "fr"}) == {"page_language": "fr"}
    assert language_hints({}) == {}


def email_settings() -> EmailSettings:
    settings = EmailConnector.from_config({"domains": ["support.test"]}).settings
    assert isinstance(settings, EmailSettings)
    return settings


def mail(*headers: str, part_header: str = "") -> bytes:
    head = "\r\n".join(
        ["From: Ana <ana@example.com>", "To: help@support.test", "Message-ID: <m1@example.com>", *headers]
    )
    if not part_header:
        return f"{head}\r\n\r\nHallo\r\n".encode()
    return (
        f'{head}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n{part_header}\r\n\r\nHallo\r\n--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("raw", "locale"),
    [
        (mail("Content-Language: de-DE"), "de-DE"),
        (mail("Content-Language: fr, en"), "fr"),  # RFC 3282 list: the first one
        (mail(part_header="Content-Language: es-MX"), "es-MX"),  # on the text part only
        (mail("Content-Language: <b>de</b>"), None),
        (mail(), None),
    ],
)
def test_email_content_language_becomes_the_locale(raw: bytes, locale: str | None) -> None:
    parsed = parse_email(raw, recipients=["help@support.test"], settings=email_settings(), received_at=NOW, source="t")
    assert parsed.message.metadata.get("locale") == locale


@pytest.mark.integration
async def test_socket_message_carries_the_widget_hints(chat: tuple[ConnectorRuntime, str], nc: NATS) -> None:
    _, url = chat
    status, session = await open_session(url)
    assert status == 200, session
    address = tokens.visitor_address(SECRET, session["visitor_id"])
    async with chat_socket(url, session["token"]) as (ws, _ready):
        frame = {"type": "message", "client_msg_id": "m-1", "text": "Hallo"}
        await ws.send(json.dumps({**frame, "browser_language": "de-DE", "page_language": "x" * 40}))
        assert (await recv(ws))["type"] == "ack"
    [event] = await inbound_for(nc.jetstream(), address)
    assert event.message.metadata["browser_language"] == "de-DE"
    assert "page_language" not in event.message.metadata  # over 35 characters: dropped


@pytest.mark.integration
async def test_one_word_chat_with_a_german_browser_is_routed_to_the_german_agent(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    config.agents = (
        AgentSeed(id="ava", name="Ava", skills={"general": 3}, languages={"en": 5}),
        AgentSeed(id="dora", name="Dora", skills={"general": 3}, languages={"de": 5}),
    )
    chat_port = free_port()
    chat = f"http://127.0.0.1:{chat_port}"
    config.connectors["chat"] = {
        "port": chat_port,
        "widget_key": WIDGET_KEY,
        "session_secret": SECRET,
        "allowed_origins": [SITE],
        "outbound": False,
    }
    async with running_system(config, clean_nats) as system:
        async with system.http.post(chat + "/sessions", json={"widget_key": WIDGET_KEY}, headers={"Origin": SITE}) as r:
            assert r.status == 200, await r.text()
            token = (await r.json())["token"]
        message = {"client_msg_id": "c1", "text": "Hallo", "browser_language": "de-DE"}
        async with system.http.post(
            chat + "/messages", json=message, headers={"Authorization": f"Bearer {token}", "Origin": SITE}
        ) as r:
            assert r.status == 200, await r.text()

        async def offered() -> dict[str, Any] | None:
            _, body = await system.get("/v1/conversations")
            found = [c for c in body["conversations"] if c["channel"] == "chat" and c["agent_id"]]
            return found[0] if found else None

        conversation = await eventually(offered, timeout=30)
        status, detail = await system.get(f"/v1/conversations/{conversation['id']}")
    assert status == 200, detail
    assert (conversation["agent_id"], conversation["requirements"]["language"]) == ("dora", "de")
    evidence = {e["source"]: e["language"] for e in detail["language_reason"]["evidence"]}
    assert evidence == {"text": "de", "browser": "de"}
