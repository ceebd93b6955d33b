"""An email audit (real mail against the connector): what a mail holds reaches the bus, read as
mail clients read it. A mail that is one file keeps the file; a multipart whose boundary its
body does not use keeps its text; every WHATWG charset label reads as its encoding, in bodies
and in encoded words; attachment names cannot pose as other files; a huge HTML body is cut
before it is converted, not after."""

from __future__ import annotations

import base64
import codecs
from datetime import UTC, datetime

import pytest

from connectors.email import body as email_body
from connectors.email import filenames
from connectors.email import html as email_html
from connectors.email.charsets import _READ_AS, decode_bytes, decode_words
from connectors.email.connector import EmailConnector
from connectors.email.filenames import safe_filename
from connectors.email.parse import ParsedEmail, parse_email
from connectors.email.settings import EmailSettings
from events.codec import encode

NOW = datetime(2026, 11, 23, tzinfo=UTC)
PDF = b"%PDF-1.4 scanned contract\n"


def settings(**extra: object) -> EmailSettings:
    s = EmailConnector.from_config({"domains": ["support.test"], **extra}).settings
    assert isinstance(s, EmailSettings)
    return s


def parsed(raw: bytes, **extra: object) -> ParsedEmail:
    p = parse_email(raw, recipients=["support@support.test"], settings=settings(**extra), received_at=NOW, source="t")
    encode(p.message)  # whatever the parser gives, the event codec takes
    return p


HEAD = b"From: Ann <ann@customer.test>\r\nTo: support@support.test\r\nMessage-ID: <m@customer.test>\r\n"


def one_file(disposition: str, ctype: str = "application/octet-stream") -> bytes:
    """A text part, then one file with this Content-Disposition."""
    return (
        HEAD
        + (
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee file\r\n'
            f"--b\r\nContent-Type: {ctype}\r\nContent-Disposition: {disposition}\r\n\r\nx\r\n--b--\r\n"
        ).encode()
    )


# -- a mail that is one file ------------------------------------------------------------------


def test_a_mail_that_is_one_file_keeps_the_file() -> None:
    # A scanner or fax gateway: no multipart, the whole mail is the PDF.
    raw = HEAD + (
        b'Content-Type: application/pdf; name="contract.pdf"\r\nContent-Disposition: attachment\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PDF)
    )
    p = parsed(raw)
    assert p.message.text == ""  # as for a multipart holding nothing but a file
    [meta] = p.message.attachments
    assert (meta.name, meta.content_type, meta.size) == ("contract.pdf", "application/pdf", len(PDF))
    assert [a.data for a in p.attachments] == [PDF]

    photo = b"\xff\xd8\xff\xe0 a photo"
    raw = HEAD + (
        b"Content-Type: image/jpeg\r\nContent-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(photo)
    )
    p = parsed(raw)
    assert [(a.content_type, a.name, a.size) for a in p.message.attachments] == [("image/jpeg", None, len(photo))]
    assert [a.data for a in p.attachments] == [photo]


def test_a_text_mail_is_no_file_and_a_text_file_is_one() -> None:
    p = parsed(HEAD + b"Content-Type: text/plain\r\n\r\nHello, my invoice is wrong.\r\n")
    assert p.message.text == "Hello, my invoice is wrong." and p.message.attachments == ()
    p = parsed(
        HEAD + b'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="log.txt"\r\n\r\nline 1\r\n'
    )
    assert [(a.name, a.content_type) for a in p.message.attachments] == [("log.txt", "text/plain")]


# -- a multipart whose boundary the body does not use ------------------------------------------

WORDS = b"My account number is 12345 and I was charged twice."
PARTS = (
    b"This is a multi-part message in MIME format.\r\n"
    b"------=_Part_2\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    + WORDS
    + b"\r\n------=_Part_2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>"
    + WORDS
    + b"</p>\r\n------=_Part_2--\r\n"
)


@pytest.mark.parametrize(
    "content_type",
    [
        b'multipart/alternative; boundary="----=_Part_1"',  # StartBoundaryNotFoundDefect
        b"multipart/alternative",  # NoBoundaryInMultipartDefect
    ],
)
def test_a_multipart_is_split_on_the_delimiter_its_body_uses(content_type: bytes) -> None:
    p = parsed(HEAD + b"Content-Type: " + content_type + b"\r\n\r\n" + PARTS)
    assert p.message.text == WORDS.decode()
    assert p.message.metadata["mime_defect"] == "resplit"


def test_a_broken_multipart_inside_a_good_one_keeps_its_text_and_the_files_beside_it() -> None:
    raw = HEAD + (
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n--outer\r\n'
        b'Content-Type: multipart/alternative; boundary="----=_Part_1"\r\n\r\n'
        + PARTS
        + b"\r\n--outer\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=bill.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PDF) + b"--outer--\r\n"
    )
    p = parsed(raw)
    assert p.message.text == WORDS.decode() and p.message.metadata["mime_defect"] == "resplit"
    assert [a.name for a in p.message.attachments] == ["bill.pdf"]


def test_a_multipart_with_no_delimiter_at_all_gives_its_body_as_sent() -> None:
    # No boundary anywhere: what the body says is the text, flagged, never an empty message.
    raw = HEAD + b"Content-Type: multipart/mixed\r\n\r\n" + WORDS + b"\r\n-- \r\nAnn\r\n"
    p = parsed(raw)
    assert p.message.text == WORDS.decode() + "\n-- \nAnn"
    assert p.message.metadata["mime_defect"] == "raw"
    # A line of dashes is no delimiter when what it would split holds no MIME part.
    raw = HEAD + b"Content-Type: multipart/mixed\r\n\r\nOrder 12345\r\n-----\r\n" + WORDS + b"\r\n"
    p = parsed(raw)
    assert p.message.text == "Order 12345\n-----\n" + WORDS.decode() and p.message.metadata["mime_defect"] == "raw"
    latin1 = HEAD + b'Content-Type: multipart/alternative; boundary="x"\r\n\r\nGr\xfc\xdfe, ' + WORDS + b"\r\n"
    p = parsed(latin1)  # read leniently: not UTF-8, so windows-1252
    assert p.message.text == "Grüße, " + WORDS.decode() and p.message.metadata["mime_defect"] == "raw"


def test_a_well_formed_multipart_is_not_flagged() -> None:
    raw = HEAD + b'Content-Type: multipart/alternative; boundary="----=_Part_2"\r\n\r\n' + PARTS
    p = parsed(raw)
    assert p.message.text == WORDS.decode() and "mime_defect" not in p.message.metadata


# -- charset labels (WHATWG Encoding Standard) ----------------------------------------------------


@pytest.mark.parametrize(
    ("label", "codec", "text"),
    [
        ("windows-874", "cp874", "สวัสดีครับ ค่าบริการ €5"),  # Thai Outlook
        ("iso-8859-8-i", "iso8859_8", "שלום, החשבון שלי"),
        ("x-sjis", "cp932", "請求書について①"),
        ("windows-31j", "cp932", "請求書について①"),
        ("x-euc-jp", "euc_jp", "請求書について"),
        ("x-gbk", "gbk", "我的账单有问题"),
        ("x-mac-roman", "mac_roman", "Café – “quoted” ©"),
        ("x-cp1251", "cp1251", "Здравствуйте, мой счёт"),
        ("iso-8859-6-i", "iso8859_6", "مرحبا، فاتورتي"),
        ("csisolatin2", "iso8859_2", "Dzień dobry, płatność"),
        ("ks_c_5601-1987", "cp949", "청구서 문의"),
        ("big5-hkscs", "big5hkscs", "帳單問題"),
    ],
)
def test_every_whatwg_label_reads_as_its_encoding(label: str, codec: str, text: str) -> None:
    data = text.encode(codec)
    assert decode_bytes(data, label) == text
    raw = HEAD + b"Content-Type: text/plain; charset=" + label.encode() + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    assert parsed(raw + data).message.text == text


def test_the_label_table_names_codecs_python_has() -> None:
    assert len(_READ_AS) > 200  # the standard's whole table, not a handful
    for label, codec in _READ_AS.items():
        assert codecs.lookup(codec), label


def test_a_byte_order_mark_outranks_the_label_and_a_codec_that_is_no_charset_is_unknown() -> None:
    assert decode_bytes(codecs.BOM_UTF16_LE + "Grüße".encode("utf-16-le"), "iso-8859-1") == "Grüße"
    assert decode_bytes(codecs.BOM_UTF8 + "Grüße".encode(), "windows-1252") == "Grüße"
    assert decode_bytes(b"caf\xe9", "base64") == "café"  # a transform codec: no exception
    assert decode_bytes(b"a\\u202eb", "unicode-escape") == "a\\u202eb"


def b_word(label: str, text: str, codec: str) -> str:
    return f"=?{label}?B?{base64.b64encode(text.encode(codec)).decode()}?="


def test_encoded_words_read_under_their_labels_as_bodies_are() -> None:
    subject = b_word("windows-874", "ใบแจ้งหนี้ผิด", "cp874")
    name = b_word("x-sjis", "山田 太郎", "cp932")
    raw = (
        f"From: {name} <taro@customer.test>\r\nSubject: {subject} at =?x-unknown?Q?caf=E9?=\r\n"
        "Message-ID: <w@customer.test>\r\n\r\nhi\r\n"
    ).encode()
    p = parsed(raw)
    assert p.message.metadata["subject"] == "ใบแจ้งหนี้ผิด at café"
    assert p.message.sender_name == "山田 太郎" and p.message.sender == "taro@customer.test"
    # An unknown label: UTF-8 if it is, else windows-1252 (as in a body); never U+FFFD.
    assert decode_words("=?x-unknown?Q?caf=C3=A9?=") == "café"
    # Adjacent words are one text (a character split across two); plain text stays as it is.
    assert decode_words("=?utf-8?Q?caf=C3?= =?utf-8?Q?=A9?= au lait") == "café au lait"
    assert decode_words("=?utf-8?B?not base64!?= stays") == "=?utf-8?B?not base64!?= stays"


def test_an_encoded_name_cannot_make_an_address() -> None:
    # The display name decodes to something address-like: it stays a name, the address is From's.
    evil = b_word("utf-8", "ceo@acme.test <ceo@acme.test>", "utf-8")
    p = parsed(f"From: {evil} <ann@customer.test>\r\n\r\nhi\r\n".encode())
    assert p.message.sender == "ann@customer.test"
    assert p.message.sender_name == "ceo@acme.test <ceo@acme.test>"


def test_attachment_names_in_any_label() -> None:
    thai = "ใบเสร็จ.pdf"
    percent = "".join(f"%{b:02X}" for b in thai.encode("cp874"))
    for disposition in (
        f'attachment; filename="{b_word("windows-874", thai, "cp874")}"',  # Outlook
        f"attachment; filename*=windows-874''{percent}",  # RFC 2231
    ):
        raw = one_file(disposition, "application/pdf")
        assert [a.name for a in parsed(raw).message.attachments] == [thai], disposition


# -- attachment names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "ctype", "expected"),
    [
        ('attachment; filename="invoice\u202egpj.exe"', "application/octet-stream", "invoicegpj.exe"),
        ("attachment; filename*=utf-8''invoice%E2%80%AEgpj.exe", "application/octet-stream", "invoicegpj.exe"),
        ('attachment; filename="../../../etc/passwd"', "application/octet-stream", "passwd"),
        ('attachment; filename="C:\\\\Windows\\\\evil.bat"', "application/octet-stream", "evil.bat"),
        ('attachment; filename="..\\\\..\\\\boot.ini"', "text/plain", "boot.ini"),
        ('attachment; filename=".htaccess"', "text/plain", "htaccess"),
        ('attachment; filename="report.pdf                          .exe"', "application/pdf", "report.pdf .exe"),
        ("attachment; filename*=utf-8''a%00b%0D%0Ac%07.txt", "text/plain", "abc.txt"),
        ('attachment; filename="\u2066\u2069..."', "application/pdf", "attachment.pdf"),
        ('attachment; filename="../"', "image/jpeg", "attachment.jpg"),
        ('attachment; filename="\u200f"', "application/x-unheard-of", "attachment"),
    ],
)
def test_attachment_names_cannot_pose_as_other_files(disposition: str, ctype: str, expected: str) -> None:
    [meta] = parsed(one_file(disposition, ctype)).message.attachments
    assert meta.name == expected


def test_a_long_name_is_cut_keeping_its_extension() -> None:
    name = safe_filename("x" * 400 + ".pdf", "application/pdf")
    assert len(name) == filenames.MAX_NAME_CHARS and name.endswith("x.pdf")
    assert len(safe_filename("y" * 400, "application/pdf")) == filenames.MAX_NAME_CHARS
    [meta] = parsed(one_file(f'attachment; filename="{"z" * 300}.docx"')).message.attachments
    assert meta.name is not None and len(meta.name) == filenames.MAX_NAME_CHARS and meta.name.endswith(".docx")


def test_a_name_that_was_fine_stays_as_it_was() -> None:
    for name in ("Rechnung März 2026.pdf", "請求書.pdf", "فاتورة.pdf", "a.b.c.tar.gz", "scan (1).jpg"):
        assert safe_filename(name, "application/pdf") == name


# -- a huge HTML body ---------------------------------------------------------------------------


def test_a_huge_html_body_is_cut_before_it_is_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 5 MB HTML-only body held the event loop for 4.7 s in html_to_text; the converter is
    # given at most MAX_HTML_CHARS, and the text says it was cut.
    given: list[tuple[int, bool]] = []
    real = email_html.html_to_text

    def spy(html: str, *, partial: bool = False) -> str:
        given.append((len(html), partial))
        return real(html, partial=partial)

    monkeypatch.setattr(email_body, "html_to_text", spy)
    row = "<tr><td style='padding:4px;font-family:Arial'>Order 12345</td><td>charged twice</td></tr>\n"
    body = "<html><body><p>Please refund the second charge.</p><table>" + row * 8000 + "</table></body></html>"
    assert len(body) > email_html.MAX_HTML_CHARS
    raw = HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + body.encode()
    p = parsed(raw)
    [(size, partial)] = given
    assert size <= email_html.MAX_HTML_CHARS and partial
    assert p.message.text.startswith("Please refund the second charge.\nOrder 12345 charged twice")
    assert p.message.metadata["truncated"] == "true" and p.message.metadata["html_only"] == "true"

    given.clear()
    p = parsed(HEAD + b"Content-Type: text/html\r\n\r\n<p>short</p>")
    assert given == [(len("<p>short</p>"), False)] and "truncated" not in p.message.metadata


def test_cut_html_ends_before_the_tag_the_cut_falls_in_and_reads_no_open_comment_as_text() -> None:
    html = "<p>kept</p><!--[if mso]><style>p {color: red}</style><![endif]--><p>later</p>"
    assert email_html.cap_html(html, 14) == "<p>kept</p>"
    assert email_html.cap_html(html, 10_000) == html
    cut = email_html.cap_html(html, 40)  # inside the comment
    assert email_html.html_to_text(cut, partial=True) == "kept"
