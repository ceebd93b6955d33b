"""Flag types the benchmarks share: a bad value is refused when the command line is parsed,
naming the flag, not after minutes of laying down a log (``--events -5`` ran to a table of
zeros; ``--json`` into a missing folder failed only once the figures were in)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from services import logs


def at_least(lowest: int) -> Callable[[str], int]:
    """An integer flag of ``lowest`` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number (got {text!r})") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be {lowest} or more (got {value})")
        return value

    return parse


positive = at_least(1)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds (got {text!r})") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds (got {text})")
    return value


def process_counts(text: str) -> list[int]:
    """A comma-separated list of process counts, each 1 or more (``1,2``)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("must name at least one count, e.g. 1,2")
    return [positive(p) for p in parts]


def log_level(text: str) -> str:
    """A level as ``RELAYDESK_LOG_LEVEL`` takes it (``services.logs.log_level`` checks it)."""
    try:
        if not text.strip():
            raise logs.LogSettingError("log level is empty")
        return logs.log_level(text)
    except logs.LogSettingError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def output_file(text: str) -> Path:
    """Where the figures go: its folder must exist and be writable now."""
    path = Path(text).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text}")
    return path


def described(doc: str | None) -> str:
    """A benchmark's ``--help`` description: its docstring's first paragraph, as plain text."""
    return (doc or "").split("\n\n")[0].replace("``", "")
