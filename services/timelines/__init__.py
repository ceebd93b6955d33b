"""Customer timelines and conversation summaries, projected from the event log.

``open_store(target)`` picks the backend: a ``postgresql://`` (or ``postgres://``) DSN, or one
in libpq's keyword/value form (``host=db dbname=relaydesk``), opens the PostgreSQL store, a
path an SQLite file; any other URL (``mysql://…``, ``sqlite:///…``) is refused
(``target_problem``) instead of becoming a file named after it.
"""

from __future__ import annotations

from pathlib import Path

from services.timelines.fold import ConversationSummary, CustomerSummary, TimelineEntry, fold, fold_batch
from services.timelines.store import (
    DEFAULT_KEY,
    CheckpointMismatch,
    ReadOnlyStore,
    StoreUnavailable,
    TimelineStore,
    partition_key,
    partition_of,
)
from services.url_secrets import is_keyword_dsn

DEFAULT_FILE = "timelines.db"
DSN_PREFIXES = ("postgresql://", "postgres://")

__all__ = [
    "DEFAULT_FILE",
    "DEFAULT_KEY",
    "CheckpointMismatch",
    "ConversationSummary",
    "CustomerSummary",
    "ReadOnlyStore",
    "StoreUnavailable",
    "TimelineEntry",
    "TimelineStore",
    "default_target",
    "fold",
    "fold_batch",
    "is_dsn",
    "open_store",
    "partition_key",
    "partition_of",
    "target_problem",
]


def is_dsn(target: str) -> bool:
    """A PostgreSQL DSN: a URL, or libpq's keyword/value form (``host=db dbname=relaydesk``),
    which was taken for the path of an SQLite file named after it."""
    return target.startswith(DSN_PREFIXES) or is_keyword_dsn(target)


def target_problem(target: str) -> str | None:
    """Why ``target`` is neither a PostgreSQL DSN nor an SQLite path, or None. Any other URL was
    taken as a relative file path: ``mysql://db/x`` quietly became ``./mysql:/db/x``, a store
    nobody else reads."""
    if is_dsn(target) or "://" not in target:
        return None
    scheme = target.split("://", 1)[0]
    return f"{scheme}:// is not a timelines store: give a postgresql:// DSN or the path of an SQLite file"


def default_target(data_dir: str | Path, dsn: str | None = None) -> str:
    """``RELAYDESK_PROJECTION_DSN`` when set, else ``<data dir>/timelines.db``."""
    return dsn if dsn else str(Path(data_dir) / DEFAULT_FILE)


async def open_store(dsn_or_path: str, *, readonly: bool = False, schema: str | None = None) -> TimelineStore:
    """Open (and create if needed) the timeline store at ``dsn_or_path``. ``schema`` names
    the PostgreSQL schema (default ``relaydesk_timelines``); ignored for SQLite. A URL of
    another scheme is a ``ValueError`` (``target_problem``)."""
    if (problem := target_problem(dsn_or_path)) is not None:
        raise ValueError(problem)
    if is_dsn(dsn_or_path):
        from services.timelines.postgres import DEFAULT_SCHEMA, PostgresTimelineStore

        return await PostgresTimelineStore.open(dsn_or_path, readonly=readonly, schema=schema or DEFAULT_SCHEMA)
    from services.timelines.sqlite import SqliteTimelineStore

    return await SqliteTimelineStore.open(dsn_or_path, readonly=readonly)
