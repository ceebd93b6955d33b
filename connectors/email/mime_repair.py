"""Multiparts the parser could not split, split again on the delimiter their body does use."""

from __future__ import annotations

import email
import re
from email.message import Message

from .bounds import POLICY, delimiters_over
from .lenient import forgiven

# A delimiter line as RFC 2046 allows a boundary (1-70 of its characters, no space at the end).
_DELIMITER = re.compile(rb"^--([0-9A-Za-z'()+_,./:=?-][0-9A-Za-z'()+_,./:=? -]{0,69})(?<! )[ \t]*\r?$", re.M)
_MEND_DEPTH = 8


def mend_multiparts(msg: Message) -> tuple[bool, list[Message]]:
    """(any split again, those left whole): the multiparts under ``msg`` (itself included, attached
    messages not entered) whose body the parser could not split into parts, with a boundary
    parameter that no delimiter in the body matches (``StartBoundaryNotFoundDefect``) or none at
    all (``NoBoundaryInMultipartDefect``): Python keeps such a body as one string, and it held
    the whole mail ("My account number is …") while the mail read as empty. Each is split again
    on the first delimiter its body does use where that gives MIME parts; the rest stay whole
    for ``_body_text`` to give as they were sent."""
    whole: list[Message] = []
    resplit = False

    def visit(part: Message, depth: int) -> None:
        nonlocal resplit
        if part.get_content_maintype() != "multipart":
            return
        if not part.is_multipart():
            if depth >= _MEND_DEPTH or not _resplit(part):
                whole.append(part)
                return
            resplit = True
        for sub in part.get_payload():
            if isinstance(sub, Message):
                visit(sub, depth + 1)

    visit(msg, 0)
    return resplit, whole


def _resplit(part: Message) -> bool:
    """Split ``part`` (a multipart Python left as one string) on the first delimiter line in
    its body, if every part that gives has a ``Content-*`` field (MIME, not prose with a "--")."""
    try:
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes) or (found := _DELIMITER.search(body)) is None:
            return False
        if delimiters_over(body, found.group(1)):
            return False  # more parts than a mail is parsed with (``bounds``): kept whole
        boundary = found.group(1).decode("ascii")
        head = f'Content-Type: {part.get_content_type()}; boundary="{boundary}"\r\n\r\n'.encode()
        again = email.message_from_bytes(head + body, policy=POLICY)
        parts = again.get_payload()
        if not isinstance(parts, list) or not parts:
            return False
        if not all(isinstance(p, Message) and any(k.lower().startswith("content-") for k in p) for p in parts):
            return False
        part.set_payload(parts)
        part.set_boundary(boundary)
        part.preamble, part.epilogue = again.preamble, again.epilogue
        return True
    except Exception as err:  # a guess at a broken mail: never worth losing the mail over
        forgiven("resplit", err)
        return False
