"""Previews are cut between characters a reader sees, never inside one (found by an i18n audit:
the console's work-list preview, the agents' notices and delivery's logged errors cut at a code
point, so a flag became half a flag shown as a letter in a box, a family emoji lost its people,
a skin tone or an accent fell off its letter)."""

from __future__ import annotations

import pytest

from events.text import shorten
from services.api.workspace import PREVIEW_CHARS, preview_of
from services.delivery.notices import preview

FAMILY = "👨\u200d👩\u200d👧\u200d👦"  # seven code points, one character on screen


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("abcdef", 4, "abc…"),
        ("ab🇩🇪🇫🇷", 4, "ab…"),  # never one regional indicator of a flag
        ("a🇩🇪🇫🇷", 4, "a🇩🇪…"),
        ("x" + FAMILY + "y", 6, "x…"),  # never a part of a joined emoji
        ("ok 👍🏽 yes", 5, "ok …"),  # the thumb keeps its skin tone
        ("cafe\u0301 noir", 5, "caf…"),  # the e keeps its accent
        ("line\r\nnext", 6, "line…"),  # CR LF stay together
        ("Z" + "\u0336" * 50 + "tail", 10, "Z" + "\u0336" * 8 + "…"),  # one character over the limit: cut
    ],
)
def test_shorten_cuts_between_characters(text: str, limit: int, expected: str) -> None:
    assert shorten(text, limit) == expected


def test_the_work_list_and_notices_previews_keep_flags_and_emoji_whole() -> None:
    flags = "🇯🇵" * 100  # the work list keeps 80 code points: 79 would cut the 40th flag in two
    shown = preview_of(flags)
    assert shown.endswith("…") and len(shown) <= PREVIEW_CHARS
    assert shown[:-1] == "🇯🇵" * (len(shown[:-1]) // 2) and len(shown[:-1]) % 2 == 0
    families = FAMILY * 60
    told = preview(families, lines=3)
    assert told.endswith("…") and len(told) <= 300
    assert told[:-1] == FAMILY * (len(told[:-1]) // len(FAMILY))
