"""The timeline store interface, shared by the SQLite and PostgreSQL backends.

Exactly-once effect: ``apply`` writes the rows of a batch and the checkpoint (the last applied
stream sequence) in ONE transaction and skips every event at or below the checkpoint, so a
crash anywhere in a batch replays cleanly with no loss and no duplicates.

Checkpoints are kept per *key*: ``"all"`` for a single projector, ``"p<i>of<n>"`` for one of
``n`` projectors partitioned by customer (see ``partition_key``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from events.stored import StoredEvent
from services.timelines.fold import ConversationSummary, CustomerSummary, TimelineEntry
from services.timelines.rows import ErasureRecord

DEFAULT_KEY = "all"


class CheckpointMismatch(Exception):
    """The store's checkpoint is not where the writer expected it: the store was rebuilt
    and swapped in underneath a running projector (or another writer shares the key).
    The projector resumes from ``actual + 1``."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"timeline checkpoint {key!r} is {actual}, expected {expected}")
        self.key = key
        self.expected = expected
        self.actual = actual


class ReadOnlyStore(Exception):
    pass


class StoreUnavailable(Exception):
    """The store could not do what was asked for a reason of its own, not the event's or the
    request's: the connection lost (a server restart, a terminated backend), a lock another
    session holds past the wait allowed, the disk full, the file read-only or gone. The
    projector backs off and resumes from its checkpoint, never quarantining the events it was
    applying (found by the projection-database audit: an SQLite disk full or a PostgreSQL lock
    timeout parked every event as refused while the checkpoint read still worked); the API
    answers 503. The cause is chained (``__cause__``)."""


def partition_key(index: int, count: int) -> str:
    if count <= 1:
        return DEFAULT_KEY
    if not 0 <= index < count:
        raise ValueError(f"partition {index} not in 0..{count - 1}")
    return f"p{index}of{count}"


def partition_of(customer_id: str, count: int) -> int:
    """Stable across processes and Python versions (unlike ``hash``)."""
    return zlib.crc32(customer_id.encode()) % count if count > 1 else 0


@runtime_checkable
class TimelineStore(Protocol):
    async def apply(
        self,
        batch: Sequence[StoredEvent],
        *,
        key: str = DEFAULT_KEY,
        expect: int | None = None,
        through: int | None = None,
    ) -> None:
        """Write the rows of ``batch`` and the checkpoint in one transaction. Events at or
        below the checkpoint are skipped. ``expect``: raise CheckpointMismatch unless the
        checkpoint is exactly this (a projector passes what it last applied). ``through``:
        advance the checkpoint to this sequence even if the batch stops earlier (a
        partitioned projector passes the last sequence it saw, its own or not)."""
        ...

    async def checkpoint(self, key: str = DEFAULT_KEY) -> int:
        """The last applied sequence for ``key`` (0: nothing applied yet)."""
        ...

    async def fold_version(self) -> int | None:
        """The ``FOLD_VERSION`` the stored rows were built with (None: unknown, older)."""
        ...

    async def checkpoints(self) -> dict[str, int]:
        """Every checkpoint key and its sequence."""
        ...

    async def last_entry(self) -> tuple[int, str] | None:
        """The sequence and customer of the latest timeline row (None: no row yet): what the
        projector checks against the log at start (a log restored from an older backup holds
        other events at the same sequences)."""
        ...

    async def erasures(self) -> list[ErasureRecord]:
        """The erasure register: every ``CustomerErased`` this store folded, the latest per
        customer, by customer id. Written in the batch's transaction; a rebuild's swap carries
        it over (``carry_erasures``), a one-customer rebuild leaves it, so it outlives a restore
        of the log from an older backup."""
        ...

    async def timeline(
        self, customer_id: str, *, after: int = 0, limit: int = 100, channel: str | None = None
    ) -> list[TimelineEntry]:
        """The customer's entries with ``seq > after``, oldest first, at most ``limit``."""
        ...

    async def conversation(self, conversation_id: str) -> ConversationSummary | None: ...

    async def conversations(
        self,
        *,
        status: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        limit: int = 100,
    ) -> list[ConversationSummary]:
        """Most recently active first."""
        ...

    async def resolved_conversations(
        self, *, agent_id: str | None = None, after: tuple[datetime, str] | None = None, limit: int = 100
    ) -> list[ConversationSummary]:
        """Resolved conversations, most recently resolved first: by ``resolved_at``, then
        ``conversation_id``, both descending, a key a resolved conversation keeps for good
        (``merge_summary`` never changes a resolved one's ``resolved_at``; its last activity
        stays only as long as nothing after a resolution counts as activity). ``after``: the
        ``(resolved_at, conversation_id)`` of the last one of the page before; at most ``limit``."""
        ...

    async def customer(self, customer_id: str) -> CustomerSummary | None:
        """One customer: identities, profile (tier, flags, language, CRM id), activity."""
        ...

    async def customers(
        self, *, q: str | None = None, tier: str | None = None, limit: int = 100
    ) -> list[CustomerSummary]:
        """Most recently active first; ``q`` matches a substring of the customer id, any
        identity (``sms:+1555...``, ``email:ana@example.com``) or the CRM id, ignoring case."""
        ...

    async def replace_customer(self, customer_id: str, events: Sequence[StoredEvent], *, through: int) -> None:
        """Replace every row of one customer by the fold of ``events`` (all of that customer's
        events up to ``through``), in one transaction. Raises CheckpointMismatch (with the
        highest checkpoint) if a projector has applied beyond ``through``: read further and retry."""
        ...

    async def expire_bodies(self, before: datetime) -> int:
        """``[retention] message_days``: the text of every message, reply and note written
        before ``before`` reads ``[expired]`` (an erased one stays ``[erased]``), in one
        transaction; the backend's files are then scrubbed as after an erasure. Returns how
        many entries changed."""
        ...

    async def begin_rebuild(self) -> TimelineStore:
        """A writable store over a fresh, empty shadow copy (SQLite: shadow tables in the same
        file; PostgreSQL: a shadow schema) that ``swap_in`` can make live."""
        ...

    async def swap_in(self, fresh: TimelineStore) -> int:
        """Make ``fresh`` (from ``begin_rebuild``) the live copy in one transaction, set every
        checkpoint key to its checkpoint, close it, and return that checkpoint."""
        ...

    async def dump(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row of every table as stored (for comparing a rebuild with the live copy)."""
        ...

    async def close(self) -> None: ...


FaultHook = Callable[[int], None]
"""Called by a backend after writing each timeline row of a batch (tests inject crashes)."""
