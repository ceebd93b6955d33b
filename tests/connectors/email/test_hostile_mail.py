"""Mail built to cost the parser (a hostile-mail audit): bounded, kept, never filed wrongly.

``connectors/email/bounds.py``: at most ``MAX_MIME_PARTS`` parts (more: parked, through the
real SMTP listener here), the header registry sees a bounded part of a field, and fields whose
every character matters are read as sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from connectors.email import bounds
from connectors.email.authresults import ForgedSender
from connectors.email.connector import EmailConnector
from connectors.email.parse import parse_email
from connectors.email.settings import EmailSettings
from connectors.sdk.runtime import ConnectorRuntime
from events.parking import ParkingLot

from .helpers import inbound_for, smtp_send

NOW = datetime(2026, 12, 7, tzinfo=UTC)
HEAD = b"From: Ann <ann@customer.test>\r\nTo: support@support.test\r\nSubject: hi\r\n"


def settings(**extra: object) -> EmailSettings:
    s = EmailConnector.from_config({"domains": ["support.test"], **extra}).settings
    assert isinstance(s, EmailSettings)
    return s


def parse(raw: bytes, mail_from: str | None = None, **extra: object) -> tuple[str, dict[str, str]]:
    got = parse_email(
        raw, recipients=["support@support.test"], settings=settings(**extra), received_at=NOW, source="t",
        mail_from=mail_from,
    )  # fmt: skip
    return got.message.sender, dict(got.message.metadata)


def many_parts(uid: str, n: int) -> bytes:
    head = HEAD + f"Message-ID: <{uid}.0@customer.test>\r\n".encode()
    head += b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    return head + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * n + b"--b--\r\n"


@pytest.fixture
async def email(nc: NATS) -> AsyncIterator[EmailConnector]:
    config = {"port": 0, "smtp_port": 0, "domains": ["support.test"], "outbound": False, "ack_timeout": 1.0}
    connector = EmailConnector.from_config(config)
    runtime = ConnectorRuntime(connector, nc)
    await runtime.start()
    try:
        yield connector
    finally:
        await runtime.stop()


@pytest.mark.integration
async def test_a_mail_of_too_many_parts_is_accepted_and_parked_not_parsed(
    nc: NATS, email: EmailConnector, uid: str
) -> None:
    # 100,000 such parts held the event loop for 45 s; parked, the mail is kept for an operator.
    assert email.smtp_address is not None
    raw = many_parts(uid, bounds.MAX_MIME_PARTS + 1)
    result = await smtp_send(email.smtp_address, raw)
    assert result.data == 250, result
    assert await inbound_for(nc, f"{uid}.0@customer.test") == []
    record = await ParkingLot(nc.jetstream()).get(result.data_text.rsplit(" ", 1)[-1])
    assert record is not None and "MIME parts" in record.error
    # Within the bound, the same mail is an ordinary message.
    fine = await smtp_send(email.smtp_address, many_parts(uid + "x", 20))
    assert fine.data == 250 and len(await inbound_for(nc, f"{uid}x.0@customer.test", wait=5)) == 1


def test_parts_are_counted_on_the_boundaries_the_mail_declares() -> None:
    # A body of "--" lines (SQL comments, rulers) is no MIME part.
    prose = HEAD + b"\r\n" + b"-- a comment\r\n------\r\n" * 2000
    assert not bounds.mime_parts_over(prose)
    assert bounds.mime_parts_over(many_parts("u", bounds.MAX_MIME_PARTS + 1))
    assert not bounds.mime_parts_over(many_parts("u", bounds.MAX_MIME_PARTS - 1))


def test_the_header_registry_sees_a_bounded_part_of_a_field() -> None:
    # 96 KB of comments in MIME-Version took the registry 18 s.
    parsed = bounds.POLICY.header_fetch_parse("X-Padding", "a; " * 30_000)
    assert 0 < len(str(parsed)) <= bounds.MAX_FIELD_CHARS
    assert bounds.capped("a=1; b=" + "x" * 600) == "a=1"


@pytest.mark.parametrize("limit", [bounds.MAX_FIELD_CHARS, bounds.MAX_ADDRESS_FIELD_CHARS])
def test_a_long_from_is_never_cut_into_another_address(limit: int) -> None:
    # Cut where a limit falls, "<ann@customer.test.evil.example>" would read as ann@customer.test.
    padding = "x" * (limit - len('"" <ann@customer.test'))
    raw = f'From: "{padding}" <ann@customer.test.evil.example>\r\nTo: support@support.test\r\n\r\nhi\r\n'
    sender, _ = parse(raw.encode(), mail_from="envelope@evil.example")
    # Read whole, or (over the address field bound) not at all: the envelope sender.
    assert sender in ("ann@customer.test.evil.example", "envelope@evil.example")


def test_many_addresses_in_from_and_cc_read_the_first_ones() -> None:
    many = ", ".join(f"u{i}@other.test" for i in range(20_000))
    raw = f"From: u0@other.test\r\nTo: support@support.test\r\nCc: {many}\r\n\r\nhi\r\n".encode()
    sender, metadata = parse(raw)
    assert sender == "u0@other.test"
    assert metadata["cc"].split(",")[:2] == ["u1@other.test", "u2@other.test"]


def test_a_long_references_keeps_its_last_ids() -> None:
    # Read as sent: the parent of a long chain is its last id, past any cut.
    ids = " ".join(f"<r{i}.{'y' * 40}@x.test>" for i in range(2_000))
    raw = HEAD + b"Message-ID: <m@customer.test>\r\nReferences: " + ids.encode() + b"\r\n\r\nhi\r\n"
    _, metadata = parse(raw)
    assert metadata["references"].endswith(f"<r1999.{'y' * 40}@x.test>")


def test_a_dmarc_fail_far_into_its_field_is_still_seen() -> None:
    padding = "; ".join(f"dkim=none header.i=@pad{i}.test" for i in range(60))
    raw = (
        HEAD + b"Message-ID: <m@customer.test>\r\nAuthentication-Results: mx.support.test; "
        + padding.encode() + b"; dmarc=fail header.from=customer.test\r\n\r\nhi\r\n"
    )  # fmt: skip
    with pytest.raises(ForgedSender):
        parse(raw, trusted_authserv_id="mx.support.test")


@pytest.mark.integration
async def test_a_line_over_a_thousand_octets_is_taken_not_refused(nc: NATS, email: EmailConnector, uid: str) -> None:
    # aiosmtpd answered it "500 Line too long", a permanent refusal: the sender bounced it.
    assert email.smtp_address is not None
    line = "<p>" + "word " * 2_000 + "</p>"
    raw = HEAD + f"Message-ID: <{uid}.0@customer.test>\r\nContent-Type: text/html\r\n\r\n{line}\r\n".encode()
    result = await smtp_send(email.smtp_address, raw)
    assert result.data == 250, result
    [item] = await inbound_for(nc, f"{uid}.0@customer.test", wait=5)
    assert item.message.text.count("word") == 2_000


def test_a_message_id_with_a_raw_line_separator_is_no_id() -> None:
    # U+2028 in raw UTF-8: kept in the id, it made every reply fail ("Header values may not
    # contain linefeed"): Python's email splits header values on it.
    raw = HEAD + "Message-ID: <a@b\u2028X-Injected:1>\r\n\r\nhi\r\n".encode()
    got = parse_email(raw, recipients=["support@support.test"], settings=settings(), received_at=NOW, source="t")
    assert "\u2028" not in got.message.provider_message_id and "message_id" not in got.message.metadata
