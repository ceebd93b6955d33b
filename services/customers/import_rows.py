"""Reading a customers file for ``relaydesk customers import``: CSV or JSON Lines into checked
rows, each numbered by the line it starts on; a line that cannot be read or checked is a
``LineError`` naming it, the file as a whole a ``FileError``. Importing the rows is
``services.customers.importer``."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from services.customers.service import KNOWN_FLAGS, Customers
from services.identity.addresses import InvalidAddress, mask, parse_identity

COLUMNS = ("identity", "identities", "tier", "flags", "preferred_language", "crm_id")
_SPLIT = re.compile(r"[;,|]")
_FLAG_SPLIT = re.compile(r"[;,|\s]+")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


class RowError(ValueError):
    """A line that cannot be imported, and why."""


class FileError(ValueError):
    """The file as a whole cannot be read (no identity column, unknown format...)."""


@dataclass(frozen=True)
class Row:
    line: int
    identities: tuple[str, ...]
    profile: dict[str, Any]  # only what the line gives: tier, flags, preferred_language, crm_id


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str


def detect_format(path: Path, text: str) -> Literal["csv", "jsonl"]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    first = text.lstrip()[:1]
    return "jsonl" if first == "{" else "csv"


def read_records(
    text: str, fmt: Literal["csv", "jsonl"], ignored: list[str]
) -> Iterator[tuple[int, dict[str, Any] | LineError]]:
    """(line number, record or the reason it is unreadable), in file order."""
    if fmt == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield number, LineError(number, f"not valid JSON: {err.msg} (column {err.colno})")
                continue
            if not isinstance(record, dict):
                yield number, LineError(number, "not a JSON object")
                continue
            record = {str(k).strip().lower(): v for k, v in record.items()}
            for key in record:
                if key not in COLUMNS and key not in ignored:
                    ignored.append(key)
            yield number, record
        return
    reader = csv.reader(io.StringIO(text))
    header = [name.strip().lower() for name in next(reader, [])]
    if not {"identity", "identities"} & set(header):
        raise FileError("the file has no identity or identities column (first line: the column names)")
    ignored.extend(name for name in header if name not in COLUMNS and name)
    lines = text.splitlines()
    end = reader.line_num
    for cells in reader:
        # A record is numbered by the line it starts on (a quoted cell may span lines).
        start, end = end + 1, reader.line_num
        if not cells:
            continue  # a blank line
        if len(cells) > len(header):
            yield start, LineError(start, f"more cells than columns ({len(header)})")
            continue
        record = {k: v for k, v in zip(header, cells, strict=False) if k in COLUMNS}
        if end > start and (
            sum(line.count('"') for line in lines[start - 1 : end]) % 2
            or any("\n" in v or "\r" in v for v in record.values())
        ):
            # A quote left open swallows the lines after it into one cell: say so, with the
            # lines it took (found by a merges audit: they were neither imported nor reported,
            # and the error named the last line of the run).
            yield (
                start,
                LineError(
                    start,
                    f"a quote opened on line {start} runs to line {end}: lines {start}-{end} were read as one"
                    " line and none of them imported; close the quote and import again",
                ),
            )
            continue
        yield start, record


def _as_list(value: Any, splitter: re.Pattern[str], what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in splitter.split(value) if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise RowError(f"{what} must be text or a list of text")


def _text(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(f"{key} must be text")
    return value.strip() or None


def parse_row(
    number: int,
    record: dict[str, Any],
    customers: Customers,
) -> Row:
    """Check one record: identities normalised, tier and flags known, language plausible."""
    raw_identities = [
        *_as_list(record.get("identity"), _SPLIT, "identity"),
        *_as_list(record.get("identities"), _SPLIT, "identities"),
    ]
    if not raw_identities:
        raise RowError("no identity (e.g. sms:+15551234567 or email:ann@example.com)")
    identities: list[str] = []
    for n, raw in enumerate(raw_identities, start=1):
        try:
            identity = parse_identity(raw, customers.directory.rules)
        except InvalidAddress as err:
            raise RowError(f"identity {n} ({mask(raw)}): {err}") from err
        if identity not in identities:
            identities.append(identity)
    profile: dict[str, Any] = {}
    tier = _text(record, "tier")
    if tier is not None:
        tier = tier.lower()
        if tier not in customers.policy.customer_tiers:
            raise RowError(f"unknown tier {tier!r} (known: {', '.join(sorted(customers.policy.customer_tiers))})")
        profile["tier"] = tier
    if record.get("flags") not in (None, ""):
        flags = [f.lower() for f in _as_list(record.get("flags"), _FLAG_SPLIT, "flags")]
        known = {*KNOWN_FLAGS, *customers.policy.priority_flags}
        unknown = sorted(set(flags) - known)
        if unknown:
            raise RowError(f"unknown flags {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        profile["flags"] = tuple(sorted(set(flags)))
    language = _text(record, "preferred_language")
    if language is not None:
        if not _LANGUAGE.match(language):
            raise RowError(f"preferred_language {language!r} is not a language code (e.g. en, es, pt-BR)")
        profile["preferred_language"] = language.replace("_", "-")
    crm_id = _text(record, "crm_id")
    if crm_id is not None:
        profile["crm_id"] = crm_id
    return Row(number, tuple(identities), profile)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise FileError(f"cannot read {path}: {err}") from err
