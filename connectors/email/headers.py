"""A header field's value as one line of clean text, for the parser and its helpers.

``header_value``: as Python's header registry reads it, forgiven (an empty value) when the policy
cannot parse it at all; ``text_header``: a free-text field (Subject) with its RFC 2047 words read
under their labels as a body is (``charsets.decode_words``).
"""

from __future__ import annotations

from email.message import Message

from .charsets import clean_text, decode_words
from .filenames import raw_header
from .lenient import forgiven


def header_value(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception as err:  # a header the policy cannot parse at all
        forgiven(f"header.{name.lower()}", err)
        return ""
    return clean_text(" ".join(str(value).split())) if value is not None else ""


def text_header(msg: Message, name: str) -> str:
    """A free-text field (Subject) with its RFC 2047 words read by ``charsets.decode_words``
    (labels as in a body), not by Python's header registry (U+FFFD for a label it does not know)."""
    raw = raw_header(msg, name)
    return clean_text(" ".join(decode_words(raw).split())) if raw is not None else ""


def raw_text(msg: Message, name: str) -> str:
    """A field as sent (no header registry: linear whatever its length), as one line of clean
    text: what ``header_value`` gives for a field the registry would only read in part
    (Message-ID, In-Reply-To, References). Line and paragraph separators (U+2028, NEL) of raw
    UTF-8 are spaces, as in ``header_value``."""
    raw = raw_header(msg, name)
    return " ".join(clean_text(raw).split()) if raw is not None else ""
