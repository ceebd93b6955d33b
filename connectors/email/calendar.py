"""A calendar invitation (RFC 5545 text/calendar, RFC 6047 iMIP) as a line or three of text."""

from __future__ import annotations

import re
from email.message import EmailMessage

from .charsets import decode_bytes


def _decoded(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    return decode_bytes(payload, part.get_content_charset()) if isinstance(payload, bytes) else ""


def invitation_text(msg: EmailMessage) -> str:
    """For an invitation with no text body: what it is about, from its text/calendar part
    (RFC 5545 SUMMARY, DTSTART, LOCATION), so the agent reads something."""
    for part in msg.walk():
        if part.get_content_type() != "text/calendar":
            continue
        ics = _decoded(part)
        # RFC 5545 3.1: a line starting with a space or tab continues the previous one.
        unfolded = re.sub(r"\r?\n[ \t]", "", ics)
        fields: dict[str, str] = {}
        for line in unfolded.splitlines():
            name, sep, value = line.partition(":")
            key = name.split(";")[0].strip().upper()
            if sep and key in ("SUMMARY", "DTSTART", "LOCATION", "METHOD") and key not in fields:
                fields[key] = value.replace("\\,", ",").replace("\\n", " ").strip()
        if not fields.get("SUMMARY"):
            continue
        kind = "Cancelled event" if fields.get("METHOD", "").upper() == "CANCEL" else "Calendar invitation"
        details = [f"{kind}: {fields['SUMMARY']}"]
        if fields.get("DTSTART"):
            details.append(f"When: {_when(fields['DTSTART'])}")
        if fields.get("LOCATION"):
            details.append(f"Where: {fields['LOCATION']}")
        return "\n".join(details)
    return ""


def _when(value: str) -> str:
    """``20261208T090000Z`` → ``2026-12-08 09:00 UTC``; a date or a local time as far as it goes."""
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})\d{2}(Z?))?", value.strip())
    if not m:
        return value
    year, month, day, hour, minute, utc = m.groups()
    date = f"{year}-{month}-{day}"
    return date if hour is None else f"{date} {hour}:{minute}" + (" UTC" if utc else "")
