"""Provider text without the addresses it quotes: a provider's error often names the number or
the mailbox it refused, and that text goes into logs and onto ``rd.inbound`` in clear."""

from __future__ import annotations

import re

_PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")
# The fewest digits a phone number has (a subscriber number without its area code); fewer is
# a code or a count ("550 5.1.1"), which stays.
PHONE_DIGITS = 7
_EMAIL = re.compile(r"[^\s@<>\"']+@[^\s@<>\"']+")


def scrub(text: str) -> str:
    """``text`` with phone numbers and email addresses masked."""
    return _EMAIL.sub("[email]", _PHONE.sub(_number, text))


def _number(match: re.Match[str]) -> str:
    found = match.group(0)
    return "[number]" if sum(ch.isdigit() for ch in found) >= PHONE_DIGITS else found
