"""Bounds on what one mail may cost the parser, whatever it holds (found by a hostile-mail audit).

* **Header fields.** Python's header registry (``email.policy.EmailPolicy``) parses a field each
  time it is read, in time quadratic in its length: a 96 KB ``MIME-Version`` of comments took
  18 s, 600 KB of encoded words in one field 27 s, 100,000 addresses in a ``From`` minutes.
  ``POLICY`` hands it at most ``MAX_FIELD_CHARS`` of a field (cut after the last ``,`` or ``;``
  before the limit) and parses each distinct field once (a part's ``Content-Type`` is read ten
  times). An address field (From, To, Cc, …) is never cut, which could make another address
  of a cut one: over ``MAX_ADDRESS_FIELD_CHARS`` the registry gets nothing, and the parser reads
  the field as sent with ``email.utils`` (linear). Fields whose every character matters are read
  as sent, never through the registry: Subject, file names, Message-ID, In-Reply-To,
  References, Authentication-Results.
* **MIME parts.** The parser costs up to a few milliseconds per part, linear but with no
  bound: 100,000 tiny parts (3.6 MB) held the event loop for 45 s. A mail with more than
  ``MAX_MIME_PARTS`` delimiter lines of the boundaries it declares is not parsed: it is parked
  (``Malformed``), kept raw like any mail that cannot be read.
"""

from __future__ import annotations

import itertools
import re
from email.policy import EmailPolicy
from functools import lru_cache
from typing import Any

MAX_FIELD_CHARS = 512
MAX_ADDRESS_FIELD_CHARS = 4096
MAX_MIME_PARTS = 500
_ADDRESS_FIELDS = frozenset(
    {"from", "to", "cc", "bcc", "sender", "reply-to"} | {f"resent-{n}" for n in ("from", "to", "cc", "bcc", "sender")}
)
_LINE_BREAK = re.compile(r"\r|\n")  # what the stdlib's own fetch removes (not splitlines: U+2028 is text)


def capped(value: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``value`` cut to ``limit`` characters, after the last ``,`` or ``;`` before it if any."""
    if len(value) <= limit:
        return value
    cut = max(value.rfind(",", 0, limit), value.rfind(";", 0, limit))
    return value[: cut if cut > 0 else limit]


class BoundedPolicy(EmailPolicy):
    """``email.policy.SMTPUTF8`` whose header registry sees at most ``MAX_FIELD_CHARS`` of a
    field (an address field whole or not at all), each distinct field parsed once."""

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        if hasattr(value, "name"):  # already a parsed header object
            return value
        value = _LINE_BREAK.sub("", str(value))
        if name.lower() in _ADDRESS_FIELDS:
            return _parsed(self, name, value if len(value) <= MAX_ADDRESS_FIELD_CHARS else "")
        return _parsed(self, name, capped(value))


@lru_cache(maxsize=512)
def _parsed(policy: BoundedPolicy, name: str, value: str) -> Any:
    return policy.header_factory(name, value)


POLICY = BoundedPolicy(linesep="\r\n", utf8=True)

_BOUNDARY = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))""", re.IGNORECASE)


def mime_parts_over(raw: bytes, limit: int = MAX_MIME_PARTS) -> bool:
    """Whether ``raw`` has more than ``limit`` delimiter lines (``--<boundary>``, RFC 2046) of
    the boundaries it declares: the parts the parser would make, or more. Linear, and stops at
    ``limit + 1``."""
    boundaries: set[bytes] = set()
    for found in itertools.islice(_BOUNDARY.finditer(raw), limit + 1):
        boundaries.add((found.group(1) or found.group(2)).rstrip(b" \t"))
    if len(boundaries) > limit:
        return True
    if not boundaries:
        return False
    alternatives = b"|".join(re.escape(b) for b in sorted(boundaries, key=len, reverse=True))
    delimiter = re.compile(rb"^--(?:" + alternatives + rb")(?:--)?[ \t]*\r?$", re.MULTILINE)
    return len(list(itertools.islice(delimiter.finditer(raw), limit + 1))) > limit


def delimiters_over(body: bytes, boundary: bytes, limit: int = MAX_MIME_PARTS) -> bool:
    """Whether ``body`` has more than ``limit`` delimiter lines of ``boundary``."""
    delimiter = re.compile(rb"^--" + re.escape(boundary) + rb"(?:--)?[ \t]*\r?$", re.MULTILINE)
    return len(list(itertools.islice(delimiter.finditer(body), limit + 1))) > limit
