"""The API takes a changed ``[api.operators]`` table from its config file without a restart.

Granting or revoking a named operator token (``services.api.operators``) is an edit of the
config file; every API process notices the change within ``RELOAD_EVERY_S`` (it compares the
file's inode, size and modification time, so a Kubernetes ConfigMap swapped under its mount
counts) and checks the whole file as ``relaydesk config check`` would. A file with problems, or
one naming the shared token, changes nothing: the table before serves on, and the refusal is
logged with its reasons and counted. Only this table is taken; every other setting still needs
a restart (the log line says so when they differ).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog

from services.api.operators import OperatorTable, shared_token_named
from services.config import check
from services.metrics import OPERATOR_TABLE_RELOADS

log = structlog.get_logger(__name__)

RELOAD_EVERY_S = 5.0

Stamp = tuple[int, int, int] | None


def stamp_of(path: Path) -> Stamp:
    """What tells a changed file: inode, size, modification time (None: not there now)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def reload_once(path: Path, table: OperatorTable, shared_token: str) -> str:
    """Read ``path`` again and take its ``[api.operators]`` into ``table`` if the file is good.
    Returns the outcome counted: ``reloaded``, ``unchanged`` or ``refused``."""
    config, problems = check(path)
    if config is not None and not problems and (name := shared_token_named(shared_token, config.api.operators)):
        problems = [f"[api.operators] {name}: that is the shared [api] token; give {name} a token of their own"]
    if config is None or problems:
        outcome = "refused"
        log.error("api.operators_not_reloaded", path=str(path), problems=problems[:10], kept=sorted(table.table))
    elif config.api.operators == table.table:
        outcome = "unchanged"
        log.info("api.config_changed", path=str(path), note="[api.operators] unchanged; other settings need a restart")
    else:
        before, after = table.table, config.api.operators
        table.replace(after)
        outcome = "reloaded"
        log.warning(  # who may act as operator changed: worth seeing in any log level
            "api.operators_reloaded",
            path=str(path),
            granted=sorted(set(after) - set(before)),
            revoked=sorted(set(before) - set(after)),
            changed=sorted(name for name in set(before) & set(after) if before[name] != after[name]),
        )
    OPERATOR_TABLE_RELOADS.labels(outcome=outcome).inc()
    return outcome


async def follow_operators(path: Path, table: OperatorTable, shared_token: str, stop: asyncio.Event) -> None:
    """Until ``stop``: every ``RELOAD_EVERY_S``, reload the table if the file changed."""
    last = stamp_of(path)
    while True:
        try:
            await asyncio.wait_for(stop.wait(), RELOAD_EVERY_S)
            return
        except TimeoutError:
            pass
        now = stamp_of(path)
        if now == last:
            continue
        last = now
        if now is None:
            log.error("api.operators_not_reloaded", path=str(path), problems=["the config file is gone"])
            OPERATOR_TABLE_RELOADS.labels(outcome="refused").inc()
            continue
        try:
            # Checking the file reads TOML and the connector registry: off the event loop.
            await asyncio.to_thread(reload_once, path, table, shared_token)
        except Exception:
            # Not taken, and said: the table before serves on; the next change is tried again.
            log.exception("api.operators_not_reloaded", path=str(path))
            OPERATOR_TABLE_RELOADS.labels(outcome="refused").inc()
