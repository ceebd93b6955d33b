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
