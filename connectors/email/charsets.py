"""Text out of mail bytes the way mail clients read it: never an exception, never a surrogate.

* Labels are read as the WHATWG Encoding Standard (what browsers and mail clients do) reads
  them: ``iso-8859-1``, ``latin1`` and ``us-ascii`` mean windows-1252, so Outlook's curly
  quotes and dashes (0x91-0x97) in a mail labelled iso-8859-1 become U+2019 and U+2013, not C1
  control characters. A ``us-ascii`` label on bytes that are valid UTF-8 is read as UTF-8
  (8-bit mail from a client that forgot to label it). Every label of the standard's table is
  known (``windows-874``, ``x-sjis``, ``iso-8859-8-i``, …), and a byte order mark outranks it.
* RFC 2047 encoded words (Subject, display names, file names) are read by ``decode_words``
  under the same rules, not by Python's header registry, which knows fewer labels.
* An unknown label, or bytes that do not decode with theirs: UTF-8 if they are valid UTF-8,
  else windows-1252 (every byte maps to something; the five bytes windows-1252 leaves
  undefined map to the same code points as in latin-1).
* Raw UTF-8 in header fields (RFC 6532, sent with SMTPUTF8) reaches Python's ``email`` as
  surrogate escapes; ``unsurrogate`` turns them back into the characters they were. Every
  string leaving the parser goes through ``clean_text``, so nothing with a surrogate reaches
  the event codec.
"""

from __future__ import annotations

import binascii
import codecs
import re

_LATIN1_FALLBACK = "relaydesk-latin1-fallback"


def _latin1_fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    return err.object[err.start : err.end].decode("latin-1"), err.end


codecs.register_error(_LATIN1_FALLBACK, _latin1_fallback)

# The WHATWG Encoding Standard's label table, written out here (no package in our dependencies
# carries it): https://encoding.spec.whatwg.org/#names-and-labels, encodings.json of whatwg/encoding
# as of 2026-05. Each encoding → (the Python codec that reads it, its labels). Where Python's
# codec of the same name reads less, a superset is used, as the standard does: windows-1252 for
# latin1/us-ascii, gb18030 for GBK, cp932 for Shift_JIS, cp949 for EUC-KR, big5hkscs for Big5.
_WHATWG: dict[str, tuple[str, str]] = {
    "UTF-8": ("utf-8", "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8"),
    "IBM866": ("cp866", "866 cp866 csibm866 ibm866"),
    "ISO-8859-2": (
        "iso8859-2",
        "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 latin2",
    ),
    "ISO-8859-3": (
        "iso8859-3",
        "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 latin3",
    ),
    "ISO-8859-4": (
        "iso8859-4",
        "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 latin4",
    ),
    "ISO-8859-5": (
        "iso8859-5",
        "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 iso_8859-5:1988",
    ),
    "ISO-8859-6": (
        "iso8859-6",
        "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 iso-8859-6-e "
        "iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987",
    ),
    "ISO-8859-7": (
        "iso8859-7",
        "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 iso88597 "
        "iso_8859-7 iso_8859-7:1987 sun_eu_greek",
    ),
    "ISO-8859-8": (
        "iso8859-8",
        "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 iso88598 "
        "iso_8859-8 iso_8859-8:1988 visual",
    ),
    # Logical order (the -I): the same bytes, only the display direction differs.
    "ISO-8859-8-I": ("iso8859-8", "csiso88598i iso-8859-8-i logical"),
    "ISO-8859-10": ("iso8859-10", "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6"),
    "ISO-8859-13": ("iso8859-13", "iso-8859-13 iso8859-13 iso885913"),
    "ISO-8859-14": ("iso8859-14", "iso-8859-14 iso8859-14 iso885914"),
    "ISO-8859-15": ("iso8859-15", "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9"),
    "ISO-8859-16": ("iso8859-16", "iso-8859-16"),
    "KOI8-R": ("koi8-r", "cskoi8r koi koi8 koi8-r koi8_r"),
    "KOI8-U": ("koi8-u", "koi8-ru koi8-u"),
    "macintosh": ("mac-roman", "csmacintosh mac macintosh x-mac-roman"),
    "windows-874": ("cp874", "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874"),
    "windows-1250": ("cp1250", "cp1250 windows-1250 x-cp1250"),
    "windows-1251": ("cp1251", "cp1251 windows-1251 x-cp1251"),
    "windows-1252": (
        "cp1252",
        "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 iso88591 "
        "iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252",
    ),
    "windows-1253": ("cp1253", "cp1253 windows-1253 x-cp1253"),
    "windows-1254": (
        "cp1254",
        "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 iso_8859-9:1989 l5 latin5 "
        "windows-1254 x-cp1254",
    ),
    "windows-1255": ("cp1255", "cp1255 windows-1255 x-cp1255"),
    "windows-1256": ("cp1256", "cp1256 windows-1256 x-cp1256"),
    "windows-1257": ("cp1257", "cp1257 windows-1257 x-cp1257"),
    "windows-1258": ("cp1258", "cp1258 windows-1258 x-cp1258"),
    "x-mac-cyrillic": ("mac-cyrillic", "x-mac-cyrillic x-mac-ukrainian"),
    "GBK": ("gb18030", "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk"),
    "gb18030": ("gb18030", "gb18030"),
    "Big5": ("big5hkscs", "big5 big5-hkscs cn-big5 csbig5 x-x-big5"),
    "EUC-JP": ("euc_jp", "cseucpkdfmtjapanese euc-jp x-euc-jp"),
    # Half-width katakana (ESC ( I) is read too, as the standard's decoder does.
    "ISO-2022-JP": ("iso2022_jp_ext", "csiso2022jp iso-2022-jp"),
    "Shift_JIS": ("cp932", "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis"),
    "EUC-KR": (
        "cp949",
        "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 ksc_5601 windows-949",
    ),
    # The standard reads these as one U+FFFD ("replacement": it guards browsers against script
    # hidden in them). Mail text is never run as a page, and RFC 1557 / RFC 1843 mail is real:
    # read with Python's codecs; ISO-2022-CN (no codec) and the label "replacement" are unknown.
    "ISO-2022-KR": ("iso2022_kr", "csiso2022kr iso-2022-kr"),
    "HZ-GB-2312": ("hz", "hz-gb-2312"),
    "UTF-16BE": ("utf-16-be", "unicodefffe utf-16be"),
    "UTF-16LE": ("utf-16-le", "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le"),
    # x-user-defined (bytes 0x80-0xFF as private-use characters) is left out: no mail means it.
}
_READ_AS: dict[str, str] = {label: codec for codec, labels in _WHATWG.values() for label in labels.split()}
# Python codecs that are no charset (a label naming one is unknown): escapes, IDNA, transforms.
_NOT_CHARSETS = {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"}
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


def _codec(label: str | None) -> str:
    """The Python codec a label is read with; "" for a label that names none."""
    name = (label or "").strip().strip('"').strip().lower()
    try:
        info = codecs.lookup(_READ_AS.get(name, name))
    except (LookupError, ValueError):  # ValueError: a NUL or a lone surrogate in the label
        return ""
    # Python's own aliases beyond the standard (cp850, utf-7, …) stay, but no transform
    # (``base64``, ``rot13``) or escape codec: bytes.decode raises on the one, the other is no charset.
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return ""
    return info.name


def decode_bytes(data: bytes, label: str | None) -> str:
    """``data`` as text, read under ``label`` the way a mail client would."""
    # A byte order mark outranks the label (the standard's "decode").
    if data.startswith(codecs.BOM_UTF8):
        data, label = data[3:], "utf-8"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        order = "utf-16-le" if data.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"
        return data[2:].decode(order, "replace")
    if (label or "").strip().strip('"').strip().lower() in _ASCII_LABELS:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", _LATIN1_FALLBACK)
    encoding = _codec(label) or "utf-8"
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


# RFC 2047 encoded word; the charset may carry an RFC 2231 language (``utf-8*en``).
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    data = text.encode("utf-8", "surrogateescape")
    try:
        if encoding in "bB":
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        return binascii.a2b_qp(data, header=True)  # "_" is a space in a Q word
    except (binascii.Error, ValueError):
        return None


def decode_words(value: str) -> str:
    """A header value (Subject, a display name, a file name) with its RFC 2047 encoded words
    read by ``decode_bytes`` under their labels, so a label Python's ``email`` does not know
    (windows-874, x-sjis, an unknown one) reads as in a body, not as U+FFFD. Adjacent words
    are joined (the space between them is not text, RFC 2047 6.2); words with one label are
    decoded together (a character split across two words). A word that does not decode stays
    as written. Surrogates and C1 controls are left to ``clean_text``."""
    out: list[str] = []
    run: list[bytes] = []
    run_label: str | None = None
    end = 0

    def flush() -> None:
        nonlocal run_label
        if run:
            out.append(decode_bytes(b"".join(run), run_label))
            run.clear()
        run_label = None

    for match in _ENCODED_WORD.finditer(value):
        between = value[end : match.start()]
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            flush()
            out.append(between + match.group(0))
        else:
            label = match.group(1).lower()
            if not (run and (not between or between.isspace())):
                flush()
                out.append(between)
            elif label != run_label:
                flush()  # adjacent, another label: only the space between them goes
            run.append(data)
            run_label = label
        end = match.end()
    flush()
    out.append(value[end:])
    return "".join(out)


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
