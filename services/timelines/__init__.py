"""Customer timelines and conversation summaries, projected from the event log.

``open_store(target)`` picks the backend: a ``postgresql://`` (or ``postgres://``) DSN opens
the PostgreSQL store, anything else is the path of an SQLite file.
"""

from __future__ import annotations

from pathlib import Path

from services.timelines.fold import ConversationSummary, CustomerSummary, TimelineEntry, fold, fold_batch
from services.timelines.store import (
    DEFAULT_KEY,
    CheckpointMismatch,
    ReadOnlyStore,
    TimelineStore,
    partition_key,
    partition_of,
)

DEFAULT_FILE = "timelines.db"
DSN_PREFIXES = ("postgresql://", "postgres://")

__all__ = [
    "DEFAULT_FILE",
    "DEFAULT_KEY",
    "CheckpointMismatch",
    "ConversationSummary",
    "CustomerSummary",
    "ReadOnlyStore",
    "TimelineEntry",
    "TimelineStore",
    "default_target",
    "fold",
    "fold_batch",
    "is_dsn",
    "open_store",
    "partition_key",
    "partition_of",
]


def is_dsn(target: str) -> bool:
    return target.startswith(DSN_PREFIXES)


def default_target(data_dir: str | Path, dsn: str | None = None) -> str:
    """``RELAYDESK_PROJECTION_DSN`` when set, else ``<data dir>/timelines.db``."""
    return dsn if dsn else str(Path(data_dir) / DEFAULT_FILE)


async def open_store(dsn_or_path: str, *, readonly: bool = False, schema: str | None = None) -> TimelineStore:
    """Open (and create if needed) the timeline store at ``dsn_or_path``. ``schema`` names
    the PostgreSQL schema (default ``relaydesk_timelines``); ignored for SQLite."""
    if is_dsn(dsn_or_path):
        from services.timelines.postgres import DEFAULT_SCHEMA, PostgresTimelineStore

        return await PostgresTimelineStore.open(dsn_or_path, readonly=readonly, schema=schema or DEFAULT_SCHEMA)
    from services.timelines.sqlite import SqliteTimelineStore

    return await SqliteTimelineStore.open(dsn_or_path, readonly=readonly)
