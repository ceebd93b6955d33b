"""Provider text without the addresses it quotes: a provider's error often names the number or
the mailbox it refused, and that text goes into logs and onto ``rd.inbound`` in clear."""

from __future__ import annotations

import re

_PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_EMAIL = re.compile(r"[^\s@<>\"']+@[^\s@<>\"']+")


def scrub(text: str) -> str:
    """``text`` with phone numbers and email addresses masked."""
    return _EMAIL.sub("[email]", _PHONE.sub("[number]", text))
