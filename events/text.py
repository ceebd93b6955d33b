"""Whether text shows anything to its reader.

``str.strip()`` leaves zero-width and other format characters: found by an audit, a chat
message of three zero-width spaces opened a conversation agents saw as blank, and an agent's
reply of one sent the customer an empty bubble. The chat connector and the API's replies and
notes ask this instead.
"""

from __future__ import annotations

import unicodedata

# Not whitespace and not format characters (Cf), yet drawn as nothing: the Hangul fillers and
# the blank braille pattern, used to pass "non-empty" checks.
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def blank(text: str) -> bool:
    """True when ``text`` holds nothing visible: only whitespace, format characters (zero-width
    space, joiners, word joiner, BOM, soft hyphen...) and fillers. Stops at the first visible
    character, so a real message costs one or two lookups."""
    return all(ch.isspace() or ch in _FILLERS or unicodedata.category(ch) == "Cf" for ch in text)


# What continues the character before it (UAX #29 Extend and SpacingMark, roughly): accents and
# other marks, variation selectors, emoji skin tones, the tags of a subdivision flag, Hangul
# vowel and final jamo. A cut before one takes a letter's accent or an emoji's skin tone off.
_ZWJ = "\u200d"


def _continues(ch: str) -> bool:
    code = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or ch == _ZWJ
        or 0xFE00 <= code <= 0xFE0F
        or 0xE0100 <= code <= 0xE01EF
        or 0x1F3FB <= code <= 0x1F3FF
        or 0xE0020 <= code <= 0xE007F
        or 0x1160 <= code <= 0x11FF
    )


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _boundary(text: str, i: int) -> bool:
    """Whether ``text`` may be cut before ``text[i]`` without splitting what a reader sees as
    one character: an emoji sequence, a flag, a letter and its marks, CR LF."""
    before, after = text[i - 1], text[i]
    if _continues(after) or before == _ZWJ or (before == "\r" and after == "\n"):
        return False
    if _regional(before) and _regional(after):
        run = 0
        while i - 1 - run >= 0 and _regional(text[i - 1 - run]):
            run += 1
        return run % 2 == 0  # the flags before the cut are whole pairs
    return True


def shorten(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` in at most ``limit`` code points, ending in ``ellipsis`` when cut, cut only
    between user-perceived characters (found by an i18n audit: previews cut at a code point
    showed half a flag as a letter in a box, a family emoji as one person, an "é" as "e").
    A single character longer than the limit (a letter under hundreds of marks) is cut anyway."""
    if len(text) <= limit:
        return text
    keep = max(limit - len(ellipsis), 0)
    cut = keep
    while 0 < cut < len(text) and not _boundary(text, cut):
        cut -= 1
    return text[: cut or keep] + ellipsis
