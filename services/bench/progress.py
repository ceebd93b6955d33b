"""A benchmark's progress while it lays down its log: one line redrawn on a terminal; off one
(a CI log, ``| tee``), a plain line only now and then, not thousands of ``\\r`` glued together."""

from __future__ import annotations

import sys


def show(text: str, *, milestone: bool) -> None:
    """Redraw ``text`` on a terminal; off one, print it only at a ``milestone``."""
    if sys.stderr.isatty():
        print(f"\r{text}", end="", file=sys.stderr, flush=True)
    elif milestone:
        print(text, file=sys.stderr, flush=True)


def done() -> None:
    """End the redrawn line (on a terminal)."""
    if sys.stderr.isatty():
        print(file=sys.stderr, flush=True)
