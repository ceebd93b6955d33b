"""Text that may quote a customer, made fit for a log line or a stored error: a provider's
refusal names the number or mailbox it refused, a validation error quotes the value it
rejected (which an attacker or a broken client chose), and both go into logs, parked records
and ``rd.inbound`` in clear."""

from __future__ import annotations

import re

# Not inside a word: an id such as ``cv_2d8971234567ab`` is not a phone number.
_PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{5,}\d(?!\w)")
# The fewest digits a phone number has (a subscriber number without its area code); fewer is
# a code or a count ("550 5.1.1"), which stays; so does a date.
PHONE_DIGITS = 7
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EMAIL = re.compile(r"[^\s@<>\"'`]+@[^\s@<>\"'`]+")
# msgspec quotes the value it rejected ("Invalid enum value 'x' - at `$.outcome`").
_QUOTED = re.compile(r"'.*'(?= - at `|$)", re.DOTALL)


def scrub(text: str) -> str:
    """``text`` with phone numbers and email addresses masked."""
    return _EMAIL.sub("[email]", _PHONE.sub(_number, text))


def _number(match: re.Match[str]) -> str:
    found = match.group(0)
    if _DATE.fullmatch(found) or sum(ch.isdigit() for ch in found) < PHONE_DIGITS:
        return found
    return "[number]"


def redact_error(text: str) -> str:
    """An error message without the values it quotes, and scrubbed."""
    return scrub(_QUOTED.sub("'…'", text))
