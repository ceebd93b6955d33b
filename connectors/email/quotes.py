"""Quoted history cut off a reply (``mail-parser-reply``), bounded so no mail can hold the loop."""

from __future__ import annotations

import re

from mailparser_reply import EmailReplyParser  # type: ignore[import-untyped]

from .lenient import forgiven

# What the quote stripper is shown. Its quote-header patterns backtrack on long lines full of
# "on" (a quadratic cost per line: one 80 KB paragraph held the event loop, and every service
# of `relaydesk up` with it, for 144 s). A quote header is a short line near the top of a
# reply, so the stripper sees only the first lines, each long line replaced by a placeholder
# (no header is that long) and put back in what it keeps.
STRIP_SCAN_CHARS = 20_000
STRIP_LINE_CHARS = 160
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


def latest_reply(text: str, languages: list[str]) -> str | None:
    """The reply without the quoted history, or None where no quote header was found."""
    if "\ue000" in text or "\ue001" in text:
        return None  # the placeholders' own characters: not worth the risk of mixing them up
    long_lines: list[str] = []

    def shortened(line: str) -> str:
        if len(line) <= STRIP_LINE_CHARS:
            return line
        long_lines.append(line)
        return f"\ue000{len(long_lines) - 1}\ue001"

    head = "\n".join(shortened(line) for line in text[:STRIP_SCAN_CHARS].split("\n"))
    try:
        latest = EmailReplyParser(languages=languages).parse_reply(head)
    except Exception as err:  # the parser is heuristic; never lose the message over it
        forgiven("quoted_history", err)
        return None
    if not isinstance(latest, str) or _lines(latest) == _lines(head):
        return None  # no quote header in the head (the parser also trims each line's end)
    if len(text) > STRIP_SCAN_CHARS and not _quote_follows(head, latest):
        return None  # a cut that may not be a quote (a signature?): the tail beyond the head stays
    restored = _PLACEHOLDER.sub(lambda m: long_lines[int(m.group(1))], latest)
    if "\ue000" in restored or "\ue001" in restored:
        return None  # the parser cut through a placeholder: keep everything
    return restored


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


_QUOTE_START = re.compile(r"^(>|From:|-{3,}|_{5,})|:$")


def _quote_follows(head: str, latest: str) -> bool:
    """Whether what the parser cut off ``head`` starts like quoted history: quoted lines, a
    header line ("On … wrote:", "From: …") or a separator, among its first three lines."""
    kept = len(_lines(latest))
    rest = [line for line in _lines(head)[kept:] if line.strip()][:3]
    return any(_QUOTE_START.search(line.strip()) for line in rest)
