"""Attachment file names: read as sent (RFC 2231, RFC 2047) and made safe to show."""

from __future__ import annotations

import mimetypes
import re
from email.message import Message

from .bounds import MAX_ADDRESS_FIELD_CHARS, capped
from .charsets import clean_text, decode_bytes, decode_words
from .lenient import forgiven


def raw_header(msg: Message, name: str) -> str | None:
    """The first ``name`` field as sent (unfolded; RFC 2047 words and RFC 2231 values still
    encoded), or None."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return re.sub(r"\r?\n", "", str(value))
    return None


def filename(part: Message) -> str | None:
    """The file name a part gives (Content-Disposition ``filename``, else Content-Type ``name``),
    read from the field as sent: an RFC 2231 value and RFC 2047 words under their labels by
    ``charsets`` (Python's header registry reads a label it does not know as U+FFFD)."""
    try:
        for field, param in (("Content-Disposition", "filename"), ("Content-Type", "name")):
            raw = raw_header(part, field)
            if raw is None:
                continue
            holder = Message()  # compat32: the parameters as sent, an RFC 2231 value still bytes
            # Raw UTF-8 (RFC 6532) as text, not as unknown-8bit; at most 4 KiB of the field: the
            # parameter parser is quadratic (100,000 ``name*<n>*`` sections took 6 s); a long RFC
            # 2231 name (200 CJK characters, ~2,000) fits.
            holder[field] = capped(clean_text(raw), MAX_ADDRESS_FIELD_CHARS)
            value = holder.get_param(param, header=field)
            if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded bytes as latin-1)
                try:
                    data = value[2].encode("latin-1")
                except UnicodeEncodeError:  # not %-encoded after all: already text
                    return value[2] or None
                return decode_bytes(data, value[0]) or None
            if isinstance(value, str) and value:
                return decode_words(value)
        return None
    except Exception as err:  # a parameter beyond reading: kept without a name
        forgiven("attachment_name", err)
        return None


# What makes a name display as another: bidi embeddings, overrides and isolates (U+202A-E,
# U+2066-9: "invoice\u202egpj.exe" shows as "invoiceexe.jpg"), direction marks (U+200E/F,
# U+061C), invisible spaces (U+200B, U+FEFF), line separators and every control character.
_NAME_HIDDEN = re.compile("[\u202a-\u202e\u2066-\u2069\u200b\u200e\u200f\u061c\ufeff\u2028\u2029\x00-\x1f\x7f-\x9f]")
MAX_NAME_CHARS = 200
_TYPES = mimetypes.MimeTypes()  # Python's own table, not the host's: the same name on every host


def safe_filename(name: str, content_type: str) -> str:
    """An attachment's name as the console and helpdesk sinks may show it: the base name only
    (no ``../`` or ``C:\\``), nothing that changes how it displays, no leading dots (a hidden file,
    ``..``), runs of spaces as one (an extension pushed out of sight), at most ``MAX_NAME_CHARS``
    with its extension kept. A name that leaves nothing is ``attachment`` plus an extension for
    ``content_type``."""
    name = _NAME_HIDDEN.sub("", clean_text(name))
    name = " ".join(re.split(r"[/\\]", name)[-1].split())
    name = name.lstrip(". ").rstrip(". ")  # Windows drops trailing dots and spaces when saving
    if len(name) > MAX_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and 0 < len(extension) <= 16:
            name = stem[: MAX_NAME_CHARS - len(extension) - 1].rstrip(". ") + "." + extension
        else:
            name = name[:MAX_NAME_CHARS]
    return name or "attachment" + (_TYPES.guess_extension(content_type) or "")
