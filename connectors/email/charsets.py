"""Text out of mail bytes the way mail clients read it: never an exception, never a surrogate.

* Labels are read as the WHATWG Encoding Standard (what browsers and mail clients do) reads
  them: ``iso-8859-1``, ``latin1`` and ``us-ascii`` mean windows-1252, so Outlook's curly
  quotes and dashes (0x91-0x97) in a mail labelled iso-8859-1 become U+2019 and U+2013, not C1
  control characters. A ``us-ascii`` label on bytes that are valid UTF-8 is read as UTF-8
  (8-bit mail from a client that forgot to label it).
* An unknown label, or bytes that do not decode with theirs: UTF-8 if they are valid UTF-8,
  else windows-1252 (every byte maps to something; the five bytes windows-1252 leaves
  undefined map to the same code points as in latin-1).
* Raw UTF-8 in header fields (RFC 6532, sent with SMTPUTF8) reaches Python's ``email`` as
  surrogate escapes; ``unsurrogate`` turns them back into the characters they were. Every
  string leaving the parser goes through ``clean_text``, so nothing with a surrogate reaches
  the event codec.
"""

from __future__ import annotations

import codecs
import re

_LATIN1_FALLBACK = "relaydesk-latin1-fallback"


def _latin1_fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    return err.object[err.start : err.end].decode("latin-1"), err.end


codecs.register_error(_LATIN1_FALLBACK, _latin1_fallback)

# Labels read as another encoding (WHATWG Encoding Standard, "Encodings" table).
_READ_AS: dict[str, str] = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
}
# Labels that promise nothing beyond ASCII: 8-bit bytes under them are most often UTF-8.
_ASCII_LABELS = {"us-ascii", "ascii", "ansi_x3.4-1968", ""}
_C1 = re.compile(r"[\x80-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _c1_to_cp1252(match: re.Match[str]) -> str:
    byte = bytes([ord(match.group())])
    try:
        return byte.decode("cp1252")
    except UnicodeDecodeError:
        return ""  # one of the five undefined bytes: a control character nobody meant


def decode_bytes(data: bytes, label: str | None) -> str:
    """``data`` as text, read under ``label`` the way a mail client would."""
    name = (label or "").strip().strip('"').lower()
    if name in _ASCII_LABELS:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", _LATIN1_FALLBACK)
    try:
        encoding = codecs.lookup(_READ_AS.get(name, name)).name
    except LookupError:
        encoding = "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        pass
    if encoding != "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if encoding in ("utf-8", "cp1252"):
        # Labelled UTF-8 (or nothing usable) but not UTF-8: almost always latin-1/windows-1252.
        return data.decode("cp1252", _LATIN1_FALLBACK)
    # A multi-byte charset with a few broken sequences: keep what decodes.
    return data.decode(encoding, "replace")


_HEADER_END = re.compile(rb"\r?\n\r?\n")


def utf8_header_section(raw: bytes) -> bytes:
    """``raw`` with its header section made valid UTF-8 (RFC 6532): a line that is not UTF-8
    (raw latin-1 / windows-1252 from an old client) is re-encoded from windows-1252, so the
    parser sees one charset in every header field. The body is left as it is."""
    end = _HEADER_END.search(raw)
    head, body = (raw[: end.start()], raw[end.start() :]) if end else (raw, b"")
    if head.isascii():
        return raw
    lines = head.split(b"\n")
    for i, line in enumerate(lines):
        if not line.isascii():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                lines[i] = line.decode("cp1252", _LATIN1_FALLBACK).encode("utf-8")
    return b"\n".join(lines) + body


def unsurrogate(value: str) -> str:
    """A string from ``email`` whose 8-bit bytes became surrogate escapes, as the text it was:
    UTF-8 if those bytes are UTF-8 (RFC 6532), else windows-1252."""
    if not _SURROGATE.search(value):
        return value
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # Surrogates that are not escapes of bytes (\ud800-\udc7f): nothing to recover.
        return _SURROGATE.sub("\ufffd", value)
    return decode_bytes(data, "utf-8")


def clean_text(value: str) -> str:
    """Any text leaving the parser: surrogates resolved, C1 controls read as windows-1252
    (an RFC 2047 word labelled iso-8859-1 holding Outlook punctuation), NULs dropped."""
    value = unsurrogate(value)
    if _C1.search(value):
        value = _C1.sub(_c1_to_cp1252, value)
    return value.replace("\x00", "")
