"""Pure parts of the email connector: threading helpers, HTML to text, parse edge cases, settings."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from connectors.email import quotes
from connectors.email.charsets import clean_text, decode_bytes
from connectors.email.connector import EmailConnector
from connectors.email.html import html_to_text
from connectors.email.outbound import build_reply
from connectors.email.parse import header_recipients, parse_email
from connectors.email.settings import EmailSettings
from connectors.email.threads import (
    make_token,
    msgids,
    read_token,
    reply_references,
    reply_subject,
    split_address,
)
from connectors.sdk import Malformed
from events.codec import encode
from events.model import DeliverReply

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def settings(**extra: object) -> EmailSettings:
    s = EmailConnector.from_config({"domains": ["support.test"], **extra}).settings
    assert isinstance(s, EmailSettings)
    return s


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Invoice", "Re: Invoice"),
        ("Re: Invoice", "Re: Invoice"),
        ("RE: re: Aw: Invoice", "Re: Invoice"),
        ("Re[2]: Invoice", "Re: Invoice"),
        ("SV: Faktura", "Re: Faktura"),
        ("", "Re: Your request"),
        (None, "Re: Your request"),
        ("Regarding the invoice", "Re: Regarding the invoice"),
    ],
)
def test_one_re_prefix(subject: str | None, expected: str) -> None:
    assert reply_subject(subject, "Your request") == expected


def test_reply_references() -> None:
    assert reply_references("<p@x>", "<a@x> <b@x>") == ("<p@x>", "<a@x> <b@x> <p@x>")
    assert reply_references("p@x", None) == ("<p@x>", "<p@x>")
    assert reply_references("<p@x>", "<a@x> <p@x>") == ("<p@x>", "<a@x> <p@x>")
    assert reply_references(None, None) == (None, None)
    long = " ".join(f"<m{i}@x>" for i in range(40))
    _, refs = reply_references("<p@x>", long)
    assert refs is not None
    ids = msgids(refs)
    assert len(ids) == 20 and ids[0] == "m0@x" and ids[-1] == "p@x"


def test_msgids() -> None:
    assert msgids("<a@x>  <b@y>\r\n <a@x>") == ["a@x", "b@y"]
    assert msgids("bare@id") == ["bare@id"]
    assert msgids("") == [] and msgids(None) == []


def test_tokens() -> None:
    assert read_token(make_token("cv_abc")) == "cv_abc"
    signed = make_token("cv_abc", "s")
    assert read_token(signed, "s") == "cv_abc"
    assert read_token(signed, "t") is None
    assert read_token("cv_abc", "s") is None  # unsigned token when a secret is set
    assert read_token("../etc", "") is None
    a = split_address("Support+cv_1.x@Support.TEST")
    assert (a.base, a.token, a.domain) == ("Support@support.test", "cv_1.x", "support.test")


def test_html_to_text() -> None:
    html = "<p>Hi&amp;bye</p><br><br><table><tr><td>a</td><td>b</td></tr></table><blockquote><p>old</p></blockquote>"
    assert html_to_text(html) == "Hi&bye\n\na b\n> old"


def test_no_from_is_malformed() -> None:
    with pytest.raises(Malformed):
        parse_email(b"Subject: x\r\n\r\nbody", recipients=[], settings=settings(), received_at=NOW, source="t")
    with pytest.raises(Malformed):
        parse_email(b"   ", recipients=[], settings=settings(), received_at=NOW, source="t")


def test_envelope_sender_when_from_is_missing() -> None:
    p = parse_email(
        b"Subject: x\r\n\r\nbody",
        recipients=["s@support.test"],
        settings=settings(),
        received_at=NOW,
        source="t",
        mail_from="bob@Example.TEST",
    )
    assert p.message.sender == "bob@example.test"


def test_long_body_is_cut_and_non_utf8_charset_decoded() -> None:
    raw = (
        b"From: a@b.test\r\nMessage-ID: <l@b>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    ) + "Grüße ".encode("latin-1") * 10
    p = parse_email(raw, recipients=[], settings=settings(max_text_chars=12), received_at=NOW, source="t")
    assert p.message.text.startswith("Grüße Grüße")
    assert len(p.message.text) <= 12
    assert p.message.metadata["truncated"] == "true"


def test_header_recipients_for_mailboxes() -> None:
    raw = b"Delivered-To: help@support.test\r\nTo: Someone <x@y.test>, b@support.test\r\nCc: c@z.test\r\n\r\n"
    assert header_recipients(raw) == ["help@support.test", "x@y.test", "b@support.test", "c@z.test"]


def test_domains_from_a_comma_separated_env_value() -> None:
    s = EmailConnector.from_config({"domains": "Support.test, billing.test"}).settings
    assert isinstance(s, EmailSettings)
    assert s.domain_set() == {"support.test", "billing.test"}


def test_reply_headers_cannot_be_injected() -> None:
    reply = DeliverReply(
        conversation_id="cv_1",
        customer_id="cu_1",
        channel="email",
        reply_id="rep_1",
        contact="ann@customer.test",
        text="hi",
        thread_ref="<p@x>",
        metadata={"subject": "x\r\nBcc: victim@evil.test", "references": "<a@x>\r\nBcc: v@e"},
    )
    mail = build_reply(reply, settings(from_address="support@support.test"))
    data = mail.message.as_bytes()
    assert b"\nBcc:" not in data
    assert mail.message["References"] == "<a@x> <p@x>"
    assert mail.message["Subject"] == "Re: x Bcc: victim@evil.test"


@pytest.mark.parametrize(
    ("data", "label", "expected"),
    [
        ("don’t – “x” €".encode("cp1252"), "iso-8859-1", "don’t – “x” €"),
        ("don’t".encode("cp1252"), "us-ascii", "don’t"),
        ("Grüße".encode(), "us-ascii", "Grüße"),  # 8-bit UTF-8 under an ASCII label
        ("Grüße".encode(), "x-unknown-charset", "Grüße"),
        ("Grüße".encode("latin-1"), "utf-8", "Grüße"),  # mislabelled: windows-1252 fallback
        (b"a\x81b", "windows-1252", "a\x81b"),  # an undefined byte maps as in latin-1, no error
        ("注文".encode("gb2312"), "gb2312", "注文"),
    ],
)
def test_charsets_are_read_as_mail_clients_read_them(data: bytes, label: str, expected: str) -> None:
    assert decode_bytes(data, label) == expected


def test_clean_text_resolves_surrogates_and_c1_controls() -> None:
    raw_utf8 = "Jürgen".encode().decode("ascii", "surrogateescape")
    raw_latin1 = "Jürgen".encode("latin-1").decode("ascii", "surrogateescape")
    assert clean_text(raw_utf8) == "Jürgen"
    assert clean_text(raw_latin1) == "Jürgen"
    assert clean_text("don\x92t") == "don’t"
    assert clean_text("\ud800x") == "\ufffdx"


def test_raw_8bit_headers_in_any_charset_are_text_the_codec_encodes() -> None:
    for name in ("Jürgen Müller".encode(), "Jürgen Müller".encode("latin-1")):
        raw = b"From: " + name + b" <jm@b.test>\r\nSubject: " + name + b"\r\nCc: x@y.test\r\n\r\nhi\r\n"
        p = parse_email(raw, recipients=[], settings=settings(), received_at=NOW, source="t")
        assert p.message.sender_name == "Jürgen Müller"
        assert p.message.metadata["subject"] == "Jürgen Müller"
        assert p.message.metadata["cc"] == "x@y.test"
        encode(p.message)


def test_blank_plain_part_gives_way_to_html() -> None:
    raw = (
        b"From: a@b.test\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\n \r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n"
        b"<p>Line one<br>Line two <a href='https://x.test/a'>link</a></p>\r\n--b--\r\n"
    )
    p = parse_email(raw, recipients=[], settings=settings(), received_at=NOW, source="t")
    assert p.message.text == "Line one\nLine two link (https://x.test/a)"
    assert p.message.metadata["html_only"] == "true"


def test_reply_all_copies_the_others_but_not_us_or_the_customer() -> None:
    reply = DeliverReply(
        conversation_id="cv_1",
        customer_id="cu_1",
        channel="email",
        reply_id="rep_1",
        contact="ann@customer.test",
        text="hi",
        metadata={"cc": "bob@customer.test, ANN@customer.test,team@support.test,not an address,bob@customer.test"},
    )
    mail = build_reply(reply, settings(from_address="support@support.test"))
    assert mail.cc == ("bob@customer.test",)
    assert mail.message["Cc"] == "bob@customer.test"
    assert build_reply(reply, settings(from_address="support@support.test", reply_all=False)).cc == ()


def reply_bytes(text: str, *, in_reply_to: str | None = "<rd.rp_1@support.test>") -> bytes:
    msg = EmailMessage()
    msg["From"] = "ann@customer.test"
    msg["To"] = "support@support.test"
    msg["Subject"] = "Re: Invoice"
    msg["Message-ID"] = "<q@customer.test>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content(text, cte="quoted-printable")
    return msg.as_bytes()


def parsed_text(raw: bytes) -> tuple[str, dict[str, str]]:
    p = parse_email(raw, recipients=["support@support.test"], settings=settings(), received_at=NOW, source="t")
    return p.message.text, p.message.metadata


def test_the_quote_stripper_sees_only_short_lines_of_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    # An email audit: one 80 KB paragraph full of "on" held the event loop (and every service
    # of `relaydesk up`) for 144 s in the stripper's backtracking quote-header patterns, whose
    # cost grows with the square of a line's length. What it is shown is bounded instead.
    from mailparser_reply import EmailReplyParser

    shown: list[str] = []
    real = EmailReplyParser.parse_reply

    def spy(self: EmailReplyParser, text: str) -> str:
        shown.append(text)
        return real(self, text)

    monkeypatch.setattr(EmailReplyParser, "parse_reply", spy)
    huge = "on the table on the chair on the floor " * 2000  # 78 KB on one line
    text, metadata = parsed_text(reply_bytes(huge + "\n\nOn Mon, Ann wrote:\n> old\n"))
    assert text.startswith(huge.strip()) and "quote_stripped" not in metadata  # its header is past the head
    long = "on the table on the chair on the floor " * 100  # 3.9 KB on one line, then the quote
    text, metadata = parsed_text(reply_bytes(long + "\n\nOn Mon, Ann wrote:\n> old\n"))
    assert text == long.strip() and metadata["quote_stripped"] == "true"  # the long line put back
    assert len(shown) == 2
    for seen in shown:
        assert len(seen) <= quotes.STRIP_SCAN_CHARS
        assert max(len(line) for line in seen.splitlines()) <= quotes.STRIP_LINE_CHARS


def test_a_long_reply_keeps_its_tail_when_the_cut_is_no_quote() -> None:
    body = "\n".join(f"line {i} of what the customer wrote" for i in range(1500))
    text, metadata = parsed_text(reply_bytes("Please fix.\n\n" + body + "\n-- \nAnn\n"))
    assert "line 1499 of what the customer wrote" in text
    quoted = "Please fix.\n\nOn Mon, Nov 23, 2026 Support <s@support.test> wrote:\n" + "> quoted\n" * 3000
    text, metadata = parsed_text(reply_bytes(quoted))
    assert text == "Please fix." and metadata["quote_stripped"] == "true"


def test_a_new_mail_keeps_what_it_forwards() -> None:
    # Without thread evidence a mail is not a reply to us: its forwarded block is the evidence.
    forwarded = (
        "Please see the invoice below, the amount is wrong.\n\n"
        "---------- Forwarded message ---------\nFrom: Billing <billing@shop.test>\n"
        "Date: Mon, 23 Nov 2026\nSubject: Invoice 123\n\nInvoice 123: amount due EUR 4,999.00\n"
    )
    text, metadata = parsed_text(reply_bytes(forwarded, in_reply_to=None))
    assert "amount due EUR 4,999.00" in text and "quote_stripped" not in metadata
