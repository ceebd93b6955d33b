"""The widget's language hints: the visitor's browser language (``navigator.language``) and
the embedding page's ``<html lang>``. Intake weighs them as priors when a message is too short
to tell its language (``services/intake/language.py``); they are the page's say, so anything
that is not a plausible BCP 47 tag is dropped rather than passed on."""

from __future__ import annotations

import re

MAX_TAG_CHARS = 35  # RFC 5646 §4.4.1: 35 characters hold every tag a registry can produce
# BCP-47-ish: a 2-8 letter language, then subtags of 1-8 letters/digits ("de-DE", "zh-Hant-TW",
# "es-419"); "_" accepted as some pages write "pt_BR".
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")
# Widget frame / POST body field → InboundMessage.metadata key (the names intake reads).
HINT_FIELDS = ("browser_language", "page_language")


def language_tag(value: object) -> str | None:
    """``value`` when it is a language tag of at most 35 characters; ``None`` otherwise."""
    if not isinstance(value, str) or len(value) > MAX_TAG_CHARS or not LANGUAGE_TAG.fullmatch(value):
        return None
    return value


def language_hints(body: dict[str, object]) -> dict[str, str]:
    """The valid hints of a message body, keyed as intake reads them (invalid ones dropped)."""
    hints = {}
    for field in HINT_FIELDS:
        tag = language_tag(body.get(field))
        if tag:
            hints[field] = tag
    return hints
