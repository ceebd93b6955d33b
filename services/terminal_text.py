"""Text from outside (a customer's name, a mail's bytes, an exception quoting either) made safe
to print on an operator's terminal.

A terminal obeys what it is sent: ESC and the C1 controls (U+0080 to U+009F, U+009B is a CSI of its
own) clear the screen, move the cursor over earlier lines, retitle the window or, with OSC 52,
write the clipboard the operator pastes into a shell next; a CR or a line feed makes a line that
looks like one of ours; bidi controls reorder what is shown (the "Trojan Source" trick); a lone
surrogate (bytes decoded with ``surrogateescape``) makes the print itself fail. Each such
character is shown as its escape (``\\x1b``, ``\\u202e``) instead, so the operator still sees
that it was there."""

from __future__ import annotations

import re

# Bidi embeddings, overrides, isolates and marks (Unicode 15: Bidi_Control).
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_SURROGATES = "\ud800-\udfff"
# Multi-line text keeps its line feeds and tabs; everything else below 0x20 goes.
_UNSAFE_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")
_UNSAFE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with every character a terminal would act on shown as its escape. With
    ``lines``, line feeds and tabs stay (a mail, a traceback); without, the text is one line."""
    return (_UNSAFE_LINES if lines else _UNSAFE_LINE).sub(_escaped, text)


# What JSON leaves raw that a terminal acts on (it escapes what is below 0x20 itself).
_UNSAFE_IN_JSON = re.compile(f"[\x7f-\x9f{_BIDI}]")


def printable_json(document: bytes) -> bytes:
    """A JSON document (UTF-8) with DEL, the C1 controls and bidi controls written as ``\\uXXXX``
    escapes: the same data to any JSON reader, nothing a terminal obeys when it is printed
    (found by an audit: ``relaydesk customers export`` printed a customer's ``\\x9b2J`` raw)."""
    text = document.decode()
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()
