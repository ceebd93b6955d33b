"""One projector process per partition of a timelines store; another stands by.

Two projectors folding the same partition into one store are correct (a batch's write checks
the checkpoint it started from, ``CheckpointMismatch``), but each batch is read and folded by
both, and when the store needs a rebuild (another fold version, a log restored under it) both
rebuild into the one shadow copy: each start of a rebuild drops the other's shadow, so they
fail each other (UndefinedTable, InvalidSchemaName, deadlocks: 18 retries with tracebacks)
until one happens to finish, 88 s for a rebuild of 252,000 events that takes 43 s alone on
PostgreSQL. Found by the replicas audit (``replicas: 2`` on the projector's Deployment,
``docker compose up --scale projector=2``).

So a projector first claims its partition of the store, with a lock the store itself keeps
for as long as the process lives: a PostgreSQL session advisory lock (on a connection of its
own), or an ``flock`` on a file beside the SQLite file. A second process finds it taken, says
so once (``projector.standing_by``) and tries again every ``POLL_S``; it takes over when the
first stops or dies (the lock goes with its session or process, even after ``kill -9``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import socket
from pathlib import Path
from typing import IO, Any

import structlog

from events.skips import skipping
from services.timelines import is_dsn

log = structlog.get_logger("relaydesk.projector")

POLL_S = 1.0
RELEASE_SKIP = "projector.claim_release"


def lock_id(schema: str, key: str) -> int:
    """The advisory lock's key: a signed 64-bit number of the schema and the partition."""
    digest = hashlib.blake2b(f"relaydesk projector {schema} {key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class ProjectorClaim:
    """``await claim.take(stop)`` waits until this process may fold ``key`` into ``target``
    (True) or ``stop`` is set (False); ``await claim.release()`` lets a standby take over."""

    def __init__(self, target: str, key: str, *, schema: str | None = None) -> None:
        self.target = target
        self.key = key
        self.schema = schema
        self.standing_by = False
        self._conn: Any = None  # psycopg.AsyncConnection holding the advisory lock
        self._file: IO[str] | None = None
        self._holder = ""  # who holds the file lock, as it wrote (SQLite)

    def _describe(self) -> str:
        return f"partition {self.key} of this store"

    async def _try(self) -> bool:
        if is_dsn(self.target):
            return await self._try_postgres()
        # A file's open, lock and write: in a thread, never on the loop (a slow or network disk).
        return await asyncio.to_thread(self._try_file)

    async def _try_postgres(self) -> bool:
        import psycopg

        from services.timelines.postgres import DEFAULT_SCHEMA, connect_options

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.target,
                autocommit=True,
                application_name=f"relaydesk projector {self.key}",
                **connect_options(self.target),  # the store's bounds: connect timeout, keepalives
            )
        key = lock_id(self.schema or DEFAULT_SCHEMA, self.key)
        cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        row = await cur.fetchone()
        return bool(row and row[0])

    def _try_file(self) -> bool:
        path = Path(f"{self.target}.projector-{self.key.replace('/', '-')}.lock")
        # 0600 like the store's own files (the data dir is the operator's alone).
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        handle = open(fd, "a+")  # noqa: SIM115 - kept open while the claim is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            self._holder = handle.read().strip()
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle
        return True

    async def take(self, stop: asyncio.Event) -> bool:
        self._holder = ""
        while not stop.is_set():
            if await self._try():
                if self.standing_by:
                    log.info("projector.claim_taken", key=self.key, after="the projector holding it stopped")
                self.standing_by = False
                return True
            if not self.standing_by:
                log.warning(
                    "projector.standing_by",
                    key=self.key,
                    holder=self._holder or "another process (a PostgreSQL session holds the claim)",
                    reason=f"another projector folds {self._describe()}; this one takes over when it stops",
                    action="run one projector per partition, or share the work with [projection] partition I/N",
                )
                self.standing_by = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
        return False

    async def release(self) -> None:
        if self._conn is not None:
            # The session's advisory lock goes with it; a close that fails leaves it to the server
            # noticing the session gone (keepalives), so a standby may wait: said and counted.
            with skipping(RELEASE_SKIP, key=self.key):
                await self._conn.close()
            self._conn = None
        if self._file is not None:
            self._file.close()
            self._file = None
