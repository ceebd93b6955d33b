"""Published contracts: the OpenAPI document of the REST API and the AsyncAPI document of the
NATS subjects, generated from the code's own types. ``relaydesk docs openapi|asyncapi``
prints one; ``--check`` compares it with the committed file beside this module."""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any, Literal

import msgspec

__all__ = ["COMMITTED", "check", "command", "generate", "render"]

What = Literal["openapi", "asyncapi"]
HERE = Path(__file__).parent
COMMITTED: dict[str, Path] = {"openapi": HERE / "openapi.json", "asyncapi": HERE / "asyncapi.json"}


def generate(what: What) -> dict[str, Any]:
    """The document as plain JSON data (tuples in schema defaults become lists)."""
    # Imported here: the generators import the API's route modules, and services.api.docs
    # (imported by the app) imports this package.
    if what == "openapi":
        from services.contracts import openapi

        document = openapi.build()
    else:
        from services.contracts import asyncapi

        document = asyncapi.build()
    built: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(document))
    return built


def render(document: dict[str, Any]) -> str:
    """The committed form: sorted keys (stable diffs), two-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check(what: What) -> tuple[bool, str]:
    """Whether the committed file equals what the code generates, and a diff when not."""
    path = COMMITTED[what]
    fresh = render(generate(what))
    kept = path.read_text(encoding="utf-8") if path.exists() else ""
    if kept == fresh:
        return True, ""
    diff = difflib.unified_diff(
        kept.splitlines(keepends=True),
        fresh.splitlines(keepends=True),
        f"{path.name} (committed)",
        f"{path.name} (code)",
    )
    return False, "".join(diff)


def command(what: What, *, check_only: bool = False) -> int:
    """``relaydesk docs WHAT [--check]``: print the document, or compare it (exit 1 on drift)."""
    if not check_only:
        sys.stdout.write(render(generate(what)))
        return 0
    same, diff = check(what)
    if same:
        print(f"{COMMITTED[what].name} is up to date")
        return 0
    sys.stdout.write(diff)
    print(
        f"\n{COMMITTED[what].name} differs from what the code generates:"
        f" run relaydesk docs {what} > services/contracts/{what}.json",
        file=sys.stderr,
    )
    return 1
