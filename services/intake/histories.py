"""Customers' histories as intake plans from them, read on from where this process last read.

A returning customer's history was read whole, decrypted and folded for every message it
sent: a customer of 200 conversations (5,800 events) cost 12 round trips, 3,200 decryptions
and 25 ms of CPU a message, and a long chat cost the square of its length. ``Histories`` keeps,
per customer (the least recently used dropped first, ``HISTORIES_KEPT``), the history folded
so far and, for each customer of its family, the last stream sequence read on its subjects. A
message reads only what was appended since (one direct get: the router's offers, agents'
replies, other intake processes' messages, this process's own appends) and folds it on.

Why that is the history a whole read gives: a sequence read on a customer's subjects is the
last one there at the time of the read, so whatever is appended later has a higher one; the
fold (``customer_history.fold_into``) is a left fold per customer and order-free across a family.

What is kept of a customer is dropped once unused for ``HISTORY_IDLE_S``: intake does not
follow the log, so an erasure (which resolves the customer's open conversations and makes
their bodies read as erased) reaches what it keeps on the customer's next message or within
that time. An erasure (``CustomerErased``) among what is read drops what is kept and the
history is read whole again, as it now reads. A failed read drops the customer's entry (read
whole next time) rather than keep half of one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from events.model import CustomerErased, CustomersMerged
from events.store import EventStore, StoredEvent
from services.intake.customer_history import CustomerHistory, fold_into

# Customers whose history is kept. Each holds what a plan reads (open conversations with their
# last texts, the message ids seen, the conversations' languages): a few KB for most.
HISTORIES_KEPT = 4_096
# Kept that long after its last use (a chat's next message comes within minutes).
HISTORY_IDLE_S = 900.0


@dataclass
class _Kept:
    history: CustomerHistory = field(default_factory=CustomerHistory)
    read_to: dict[str, int] = field(default_factory=dict)  # family member → last sequence read
    used_at: float = 0.0


class Histories:
    """``read(customer_id)``: the customer's history (and its merged customers'), current as of
    the call. Callers hold the customer's lock (one read per customer at a time); the history
    returned is the kept one, folded on by the next read: plan from it, do not change it."""

    def __init__(
        self,
        store: EventStore,
        *,
        limit: int = HISTORIES_KEPT,
        idle_s: float = HISTORY_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.limit = limit
        self.idle_s = idle_s
        self.clock = clock
        self._kept: OrderedDict[str, _Kept] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._kept)

    async def read(self, customer_id: str) -> CustomerHistory:
        self._drop_idle()
        kept = self._kept.pop(customer_id, None) or _Kept()
        fresh, read_to = await self._read_on(customer_id, kept)
        if kept.read_to and any(isinstance(s.event, CustomerErased) for s in fresh):
            kept = _Kept()  # forget what was kept of them: read whole, as it reads now
            fresh, read_to = await self._read_on(customer_id, kept)
        fold_into(kept.history, fresh, customer_id)
        kept.read_to.update(read_to)
        kept.used_at = self.clock()
        self._kept[customer_id] = kept
        while len(self._kept) > self.limit:
            self._kept.popitem(last=False)
        return kept.history

    def _drop_idle(self) -> None:
        idle_since = self.clock() - self.idle_s
        while self._kept:
            oldest = next(iter(self._kept.values()))
            if oldest.used_at > idle_since:
                return
            self._kept.popitem(last=False)

    async def _read_on(self, customer_id: str, kept: _Kept) -> tuple[list[StoredEvent], dict[str, int]]:
        """What the family appended since ``kept`` was read, and the new last sequence per member."""
        fresh: list[StoredEvent] = []
        read_to: dict[str, int] = {}
        todo = [customer_id, *sorted(kept.history.merged, reverse=True)]
        done: set[str] = set()
        while todo:
            member = todo.pop()
            if member in done:
                continue
            done.add(member)
            own = await self.store.read_customer_direct(member, after=kept.read_to.get(member, 0))
            if own:
                read_to[member] = max(s.seq for s in own)
            fresh.extend(own)
            merged = {s.event.merged_id for s in own if isinstance(s.event, CustomersMerged)}
            todo.extend(sorted(merged - done, reverse=True))
        return fresh, read_to
