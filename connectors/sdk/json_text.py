"""JSON from outside (a webhook's body, a web chat frame) as Python values whose every string
is Unicode text that can be stored.

``json.loads`` accepts an escaped lone UTF-16 surrogate (``"\\ud800"``) and returns a string
no encoder will write: found by an audit, a chat message holding one raised at its size check,
was answered "unavailable, send it again", and the widget resent it for ever. Such a body is
refused here, as the bad UTF-8 it stands for would be.
"""

from __future__ import annotations

import json
import re
from typing import Any

# ``\uD800``-``\uDFFF`` in either case: a surrogate escape (a pair is fine, and is checked too).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class NotText(ValueError):
    """The JSON holds a string that is not Unicode text (a lone surrogate)."""


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``; ``NotText`` (a ValueError) when a string in it holds a lone
    surrogate. The check walks the value only when an escape is there: rarely, and cheaply."""
    value = json.loads(data)
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            raise NotText("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff): not Unicode text") from err
    return value
