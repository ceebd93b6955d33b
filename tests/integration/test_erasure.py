"""Issue 9's erasure scan: one person writes on every channel (SMS from two numbers, email with
an attachment, Messenger, web chat), an agent replies, an operator erases them; then no file
of the NATS store, of the SQLite timelines (with -wal/-shm) or of a PostgreSQL timelines store
holds their phone numbers, email address, name or message texts in plain text. The timeline
shows redacted entries, a rebuild keeps them redacted, another customer is untouched."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import smtplib
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jwt
import nats
import pytest

from events.model import ConversationResolved
from events.personal import ERASED
from services.bootstrap import event_store
from services.bus.embedded import EmbeddedNats
from services.rebuild import rebuild_timelines
from services.timelines import open_store
from tests.integration.fake_twilio import FakeTwilio, with_fake_twilio
from tests.integration.system import System, accept_if_offered, eventually, running_system, system_config
from tests.integration.test_one_customer_every_channel import (
    JWT_SECRET,
    META_SECRET,
    WIDGET_KEY,
    meta_message,
    with_every_channel,
)
from tests.timelines.helpers import drop_schemas, new_id, postgres

pytestmark = pytest.mark.integration


PHONE, PHONE2, BOB = "+15551234567", "+15559876543", "+15553330000"
EMAIL = "annabel.zyxwort@example.com"
NAME = "Annabel Zyxwort"
TEXTS = {
    "sms": "QUOKKA-SMS-ONE my invoice is wrong",
    "sms2": "QUOKKA-SMS-TWO from my other phone",
    "email": "QUOKKA-EMAIL-THREE writing by email",
    "social": "QUOKKA-SOCIAL-FOUR and on Messenger",
    "chat": "QUOKKA-CHAT-FIVE and in the chat",
    "reply": f"Dear {NAME}, QUOKKA-REPLY-SIX your refund is on its way",
}
BOB_TEXT = "WOMBAT-BOB-SEVEN keeps every word"
ATTACHMENT = b"%PDF-1.4 ZYXWORT-PASSPORT-SCAN"
# What may not be found (case-insensitively) in any file once she is erased.
SECRETS = [
    PHONE.removeprefix("+"),
    PHONE2.removeprefix("+"),
    EMAIL,
    "zyxwort",  # her surname: in her name, email, Messenger id, chat user id and attachment
    *(t.split()[0] for t in TEXTS.values() if t.startswith("QUOKKA")),
    "QUOKKA-REPLY-SIX",
]


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A schema name of this test's own (and ``<it>_rebuilt``), dropped afterwards."""
    schema = new_id("erase_")
    yield schema
    if (dsn := postgres().dsn) is not None:
        await drop_schemas(dsn, schema)
        await drop_schemas(dsn, schema + "_rebuilt")


def files_holding(root: Path, needles: list[str]) -> dict[str, list[str]]:
    """Every file under ``root`` with any of ``needles`` in its bytes (ignoring case)."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes().lower()
        hits = [n for n in needles if n.lower().encode() in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def dump_text(dump: dict[str, list[tuple[object, ...]]]) -> str:
    return repr(dump)


async def test_an_erased_customer_leaves_no_plain_text_anywhere(
    tmp_path: Path, clean_nats: EmbeddedNats, fake_twilio: tuple[FakeTwilio, str], pg_schema: str
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, fake_twilio[1])
    config.runner.snapshot_every = 5  # snapshots exist, and are scanned too
    smtp_port, social_port, chat_port = with_every_channel(config)
    pg = postgres()
    pg_store = await open_store(pg.dsn, schema=pg_schema) if pg.dsn else None
    nc = await nats.connect(clean_nats.url)
    reader = event_store(nc, config)
    try:
        async with running_system(config, clean_nats) as system:
            customer_id, other_id = await _traffic(system, smtp_port, social_port, chat_port)
            if pg_store is not None:  # a PostgreSQL projection fed like the projector feeds it
                await pg_store.apply(await reader.read())

            # Refused: no reason, an unknown customer. Then erased, and asked again: the same.
            assert (await _delete(system, f"/v1/customers/{customer_id}", None))[0] == 400
            assert (await _delete(system, "/v1/customers/cu_nobody", "request 42"))[0] == 404
            status, report = await _delete(system, f"/v1/customers/{other_id}", "request 42")  # the merged one
            assert status == 200, report
            assert report["customer_id"] == customer_id and set(report["erased_ids"]) == {customer_id, other_id}
            assert report["keys_destroyed"] == 2 and report["identity_mappings"] >= 5
            assert report["inbound_messages"] >= 5 and report["chat_frames"] >= 1 and report["attachments"] == 1
            status, again = await _delete(system, f"/v1/customers/{customer_id}", "request 42")
            assert status == 200 and again["already_erased"] and again["seq"] is None
            # Her open conversations were resolved as erased: the resolved notices quote nothing.
            her_log = [s.event for s in await reader.read_customer(customer_id)]
            resolved = [e for e in her_log if isinstance(e, ConversationResolved)]
            assert resolved and all(e.erased for e in resolved)

            entries = await eventually(lambda: _redacted_timeline(system, customer_id), timeout=30)
            assert {e["channel"] for e in entries if e["direction"] == "in"} >= {"sms", "email", "social", "chat"}
            status, body = await system.get(f"/v1/customers/{customer_id}")
            assert status == 200 and body["erased"] and body["identities"] == []
            assert (await system.get("/v1/customers", identity=f"sms:{PHONE}"))[0] == 404
            _, bob_timeline = await system.get(f"/v1/customers/{await system.customer(BOB)}/timeline")
            assert any(e.get("text") == BOB_TEXT for e in bob_timeline["entries"])
        if pg_store is not None:
            await pg_store.apply(await reader.read())
        # A rebuild from the log keeps her redacted (her keys are gone): the very rows the
        # projector redacted live.
        db = tmp_path / "data" / "timelines.db"
        live = await open_store(str(db), readonly=True)
        try:
            live_rows = await live.timeline(customer_id, limit=1000)
            live_customer = await live.customer(customer_id)
        finally:
            await live.close()
        await rebuild_timelines(reader, str(db), progress=False)
        if pg.dsn is not None:
            await rebuild_timelines(reader, pg.dsn, schema=pg_schema + "_rebuilt", progress=False)
    finally:
        await nc.close()

    rebuilt = await open_store(str(db), readonly=True)
    try:
        entries = await rebuilt.timeline(customer_id, limit=1000)
        assert entries[: len(live_rows)] == live_rows
        assert await rebuilt.customer(customer_id) == live_customer
        assert [e.text for e in entries if e.direction == "in"] and all(
            e.text == ERASED for e in entries if e.direction == "in"
        )
        assert any(e.text == BOB_TEXT for e in await rebuilt.timeline(await _bob_id(rebuilt)))
    finally:
        await rebuilt.close()

    # The scan: nothing of hers in plain text, anywhere; Bob's words are found (the scan works).
    assert files_holding(clean_nats.store_dir, SECRETS) == {}
    assert files_holding(clean_nats.store_dir, [BOB_TEXT.split()[0]]), "the scan finds what is there"
    db_files = [p for p in db.parent.iterdir() if p.name.startswith("timelines.db")]
    for path in db_files:
        data = path.read_bytes().lower()
        assert [s for s in SECRETS if s.lower().encode() in data] == [], path.name
        assert path.stat().st_mode & 0o777 == 0o600, path.name
    assert BOB_TEXT.lower().encode() in db.read_bytes().lower()

    if pg.dsn is None:
        pytest.skip(f"SQLite and NATS scanned clean; no PostgreSQL to scan: {pg.about}")
    assert pg_store is not None
    try:
        for schema_store in (pg_store, await open_store(pg.dsn, schema=pg_schema + "_rebuilt")):
            text = dump_text(await schema_store.dump()).lower()
            assert [s for s in SECRETS if s.lower() in text] == []
            assert BOB_TEXT.lower() in text
            if schema_store is not pg_store:
                await schema_store.close()
    finally:
        await pg_store.close()


async def _bob_id(store: Any) -> str:
    found = await store.customers(q="5553330000")
    assert found, "Bob is still findable by his number"
    return str(found[0].customer_id)


async def _delete(system: System, path: str, reason: str | None) -> tuple[int, Any]:
    headers = {"Authorization": "Bearer test-operator-token"}
    body = {"reason": reason} if reason is not None else {}
    async with system.http.delete(system.api + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def _redacted_timeline(system: System, customer_id: str) -> list[dict[str, Any]] | None:
    status, body = await system.get(f"/v1/customers/{customer_id}/timeline", limit="1000")
    if status != 200:
        return None
    entries: list[dict[str, Any]] = body["entries"]
    if not any(e["kind"] == "customer_erased" for e in entries):
        return None
    texts = [e.get("text") for e in entries if e.get("text")]
    assert all(t == ERASED for t in texts), texts
    return entries


async def _traffic(system: System, smtp_port: int, social_port: int, chat_port: int) -> tuple[str, str]:
    """Her messages on every channel and an agent's reply; Bob's SMS. Returns (her id, the id
    of the customer her second number made, merged into her)."""
    assert await system.send_sms("SM" + "a" * 32, PHONE, TEXTS["sms"]) == 200
    customer_id = await eventually(lambda: system.customer(PHONE))
    for identity in (f"email:{EMAIL}", "social:PSID_ZYXWORT", "chat:user:zyxwort-42"):
        status, body = await system.post(f"/v1/customers/{customer_id}/identities", {"identity": identity})
        assert status in (200, 201), body
    assert await system.send_sms("SM" + "b" * 32, PHONE2, TEXTS["sms2"]) == 200
    other_id = await eventually(lambda: system.customer(PHONE2))
    status, body = await system.post(f"/v1/customers/{customer_id}/merge", {"other": other_id})
    assert status == 200, body
    assert await system.send_sms("SM" + "c" * 32, BOB, BOB_TEXT) == 200

    mail = EmailMessage()
    mail["From"] = f"{NAME} <{EMAIL}>"
    mail["To"] = "help@support.example.com"
    mail["Subject"] = "Invoice"
    mail["Message-ID"] = "<m1-erasure@example.org>"
    mail.set_content(TEXTS["email"])
    mail.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename="zyxwort-passport.pdf")
    await asyncio.to_thread(_send_mail, smtp_port, mail)

    body_bytes = meta_message("PSID_ZYXWORT", "mid.erase.1", TEXTS["social"])
    signature = "sha256=" + hmac.new(META_SECRET.encode(), body_bytes, hashlib.sha256).hexdigest()
    async with system.http.post(
        f"http://127.0.0.1:{social_port}/meta/webhook",
        data=body_bytes,
        headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
    ) as r:
        assert r.status == 200, await r.text()

    now = int(time.time())
    claims = {"sub": "zyxwort-42", "name": NAME, "email": EMAIL, "email_verified": True, "iat": now, "exp": now + 600}
    chat = f"http://127.0.0.1:{chat_port}"
    async with system.http.post(
        chat + "/sessions",
        json={"widget_key": WIDGET_KEY, "identity_token": jwt.encode(claims, JWT_SECRET, algorithm="HS256")},
        headers={"Origin": chat},
    ) as r:
        assert r.status == 200, await r.text()
        session = await r.json()
    async with system.http.post(
        chat + "/messages",
        json={"client_msg_id": "c1", "text": TEXTS["chat"]},
        headers={"Authorization": f"Bearer {session['token']}", "Origin": chat},
    ) as r:
        assert r.status == 200, await r.text()

    # An agent takes her SMS conversation and replies (it goes out through the fake Twilio).
    conv = await accept_if_offered(system, await eventually(lambda: _open_sms(system, customer_id)))
    status, body = await system.post(f"/v1/conversations/{conv['id']}/reply", {"text": TEXTS["reply"]})
    assert status == 202, body

    async def everything() -> bool:
        status, body = await system.get(f"/v1/customers/{customer_id}/timeline", limit="1000")
        entries = body.get("entries", []) if status == 200 else []
        channels = {e["channel"] for e in entries if e.get("direction") == "in"}
        return channels >= {"sms", "email", "social", "chat"} and any(e["kind"] == "message_sent" for e in entries)

    await eventually(everything, timeout=40)
    return customer_id, other_id


async def _open_sms(system: System, customer_id: str) -> dict[str, Any] | None:
    status, body = await system.get("/v1/conversations")
    assert status == 200, body
    for conv in body["conversations"]:
        if (
            conv["customer_id"] == customer_id
            and conv["channel"] == "sms"
            and conv["status"] in ("offered", "assigned")
        ):
            return conv  # type: ignore[no-any-return]
    return None


def _send_mail(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(message)


def test_the_scan_sees_through_case(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"xx ZyXwOrT yy")
    os.makedirs(tmp_path / "d")
    (tmp_path / "d" / "b").write_bytes(b"nothing")
    assert files_holding(tmp_path, ["zyxwort"]) == {"a": ["zyxwort"]}
