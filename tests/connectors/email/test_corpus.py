"""Real-world-shaped mails (``corpus/*.eml``), each sent over SMTP with smtplib to the running
connector on a real nats-server: every one is accepted (250) and reaches the bus with text an
agent can read, or, when it is not a mail at all, is kept raw and parked.

What each file stands for (the RFCs and the clients that send such mail):
- ``smtputf8_from``: raw UTF-8 in From, Subject and the addresses (RFC 6532 header fields,
  RFC 6531 SMTPUTF8 on MAIL FROM), as Gmail and Postfix relay internationalised mail.
- ``cp1252_in_latin1``: Outlook's windows-1252 punctuation (0x92, 0x93, 0x96, 0x80, 0x85)
  in 8-bit text and an RFC 2047 encoded word both labelled iso-8859-1; read as windows-1252
  as the WHATWG Encoding Standard (and every mail client) reads that label.
- ``cp1252_in_us_ascii``: the same bytes, quoted-printable (RFC 2045 6.7), labelled us-ascii.
- ``blank_text_html``: multipart/alternative (RFC 2046 5.1.4) with a blank text/plain part
  (Gmail's web client does this with some extensions): the HTML part read as text.
- ``nested_multiparts``: mixed > alternative > related (RFC 2387) with an inline image
  (Content-ID) and a PDF; a Cc (RFC 5322 3.6.3) beside our own address.
- ``winmail_dat``: Outlook's TNEF ``application/ms-tnef`` winmail.dat, kept as an attachment.
- ``calendar_invite``: an iMIP invitation (RFC 6047, RFC 5545 text/calendar, method REQUEST)
  with no text part, as Google Calendar sends to a mailbox that is not a calendar user.
- ``quoted_printable``: UTF-8 quoted-printable body with soft line breaks, RFC 2047 Q-encoded
  display name and subject.
- ``base64_body``: base64 body (RFC 2045 6.8) and an ISO-2022-JP B-encoded subject (RFC 1468).
- ``unparseable``: bytes that are no RFC 5322 message (no header field), from a null sender.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from connectors.email.connector import EmailConnector
from connectors.sdk.runtime import ConnectorRuntime
from events.parking import ParkingLot

from .helpers import inbound_for, smtp_send

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).parent / "corpus"
SETTINGS: dict[str, Any] = {
    "port": 0,
    "smtp_port": 0,
    "domains": ["support.test"],
    "outbound": False,
    "ack_timeout": 1.0,
    "strip_quotes": False,
}


@dataclass(frozen=True)
class Expected:
    message_id: str  # the Message-ID's local part after the test's uid
    text: tuple[str, ...]  # pieces the text must contain
    sender: str
    sender_name: str
    subject: str
    attachments: tuple[tuple[str, str], ...] = ()  # (content type, name)
    metadata: dict[str, str] = field(default_factory=dict)
    mail_from: str = ""
    smtputf8: bool = False


EXPECTED: dict[str, Expected] = {
    "smtputf8_from": Expected(
        ".smtputf8@bücher.example",
        ("die Rechnung enthält einen Fehler", "Mit freundlichen Grüßen"),
        "jürgen@bücher.example",
        "Jürgen Müller",
        "Rückfrage zur Rechnung Nr. 4711 – bitte prüfen",
        mail_from="jürgen@bücher.example",
        smtputf8=True,
    ),
    "cp1252_in_latin1": Expected(
        ".cp1252@customer.test",
        ("Hi – I was charged twice and I don’t know why.", "The “Premium” plan costs €9.99…"),
        "siobhan@customer.test",
        "O'Brien, Siobhan",
        "Don’t charge me twice",
    ),
    "cp1252_in_us_ascii": Expected(
        ".ascii@customer.test",
        ("Where’s my order? It’s been a week – please check.",),
        "dave@customer.test",
        "Dave",
        "Order status",
    ),
    "blank_text_html": Expected(
        ".blank@customer.test",
        ("Hello,\n\nI can't log in since yesterday.", "Screenshot: here (https://files.customer.test/s/1)", "Mia"),
        "mia@customer.test",
        "Mia Chen",
        "Can't log in",
        metadata={"html_only": "true"},
    ),
    "nested_multiparts": Expected(
        ".nested@customer.test",
        ("The parcel arrived damaged, see the photo and the delivery note.",),
        "paul@customer.test",
        "Paul Martin",
        "Damaged parcel (photos attached)",
        attachments=(("application/pdf", "delivery-note.pdf"), ("image/png", "photo.png")),
        metadata={"cc": "anna@customer.test"},
    ),
    "winmail_dat": Expected(
        ".tnef@customer.test",
        ("Please find the signed contract attached.",),
        "jan.kowalski@customer.test",
        "Kowalski, Jan",
        "Contract renewal",
        attachments=(("application/ms-tnef", "winmail.dat"),),
    ),
    "calendar_invite": Expected(
        ".invite@customer.test",
        (
            "Calendar invitation: Onboarding call, account set-up",
            "When: 2026-12-08 09:00 UTC",
            "Where: https://meet.customer.test/abc-defg-hij",
        ),
        "lea@customer.test",
        "Lea Dubois",
        "Invitation: Onboarding call @ Tue 8 Dec 2026 10:00 - 10:30 (CET)",
        attachments=(("application/ics", "invite.ics"),),
    ),
    "quoted_printable": Expected(
        ".qp@customer.test",
        ("j'ai été facturée deux fois pour la même commande. Pouvez-vous vérifier\u00a0?",),
        "renee@customer.test",
        "Renée Lefèvre",
        "Problème de facturation",
    ),
    "base64_body": Expected(
        ".b64@customer.test",
        ("注文した商品が届きません。",),
        "hana@customer.test",
        "Sato Hana",
        "注文について",
    ),
}


@contextlib.asynccontextmanager
async def running(nc: NATS) -> AsyncIterator[EmailConnector]:
    connector = EmailConnector.from_config(dict(SETTINGS))
    runtime = ConnectorRuntime(connector, nc)
    await runtime.start()
    try:
        yield connector
    finally:
        await runtime.stop()


@pytest.fixture
async def email(nc: NATS) -> AsyncIterator[EmailConnector]:
    async with running(nc) as connector:
        yield connector


def corpus_mail(name: str, uid: str) -> bytes:
    return (CORPUS / f"{name}.eml").read_bytes().replace(b"@UID@", uid.encode())


def test_every_corpus_file_has_an_expectation() -> None:
    names = {p.stem for p in CORPUS.glob("*.eml")}
    assert names == set(EXPECTED) | {"unparseable"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_corpus_mail_is_accepted_with_readable_text(nc: NATS, email: EmailConnector, uid: str, name: str) -> None:
    want = EXPECTED[name]
    assert email.smtp_address is not None
    result = await smtp_send(
        email.smtp_address,
        corpus_mail(name, uid),
        mail_from=want.mail_from or want.sender,
        mail_options=("SMTPUTF8",) if want.smtputf8 else (),
    )
    assert result.mail == 250 and result.data == 250, result
    [item] = await inbound_for(nc, uid + want.message_id, wait=5.0)
    m = item.message
    for piece in want.text:
        assert piece in m.text, (piece, m.text)
    assert not any(0x80 <= ord(c) <= 0x9F for c in m.text), "C1 control characters in the text"
    assert (m.sender, m.sender_name) == (want.sender, want.sender_name)
    assert m.metadata["subject"] == want.subject
    assert [(a.content_type, a.name) for a in m.attachments] == list(want.attachments)
    for key, value in want.metadata.items():
        assert m.metadata.get(key) == value, key
    assert email.metrics["rejected"] == 0


async def test_corpus_unparseable_is_accepted_and_parked(nc: NATS, email: EmailConnector, uid: str) -> None:
    raw = corpus_mail("unparseable", uid) + uid.encode()  # unique bytes: a parking of its own
    assert email.smtp_address is not None
    result = await smtp_send(email.smtp_address, raw, mail_from="")
    assert result.data == 250, result
    key = result.data_text.rsplit(" ", 1)[-1]
    record = await ParkingLot(nc.jetstream()).get(key)
    assert record is not None
    assert record.kind == "quarantined" and record.reader == "connector:email"
    assert record.error == "not an RFC 5322 message (no header fields)"
    assert record.headers["Relaydesk-Source"] == "smtp"
    assert email.metrics.rejected_by_reason["unparseable"] == 1
