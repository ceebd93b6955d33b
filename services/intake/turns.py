"""One sender's messages held by this intake process, recorded lowest stream sequence first.

Deliveries usually come in stream order, and then this is the order they arrive in. Not after
a crash: a message the dead process held comes back (after the ack wait) behind later ones of
the same sender that this process already holds. Those wait for it (``OrderingWindow``:
another process may hold it); with a first-come lock each waited holding the sender's turn,
so the redelivered message queued behind all of them and each later one gave up after
``ORDER_WAIT_S`` and went first: one sender's eight messages came out 0,1,2,4,5,6,7,3, the
last 21 s late. Here a message waits for the earlier ones *before* it asks for its turn, a
message of this process counts as there (the turn orders them), and the turn goes to the
lowest sequence held.

A message registers when it starts (``hold``, no await before it, so in delivery order) and
asks for its turn when it is ready to record (``turn``); it leaves when recorded or failed.
Messages without a stream sequence (a direct call) go after every sequenced one, in the order
they came.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

Key = tuple[str, str]  # (channel, provider message id)
# A held message: its stream sequence (or one after every real one), then a serial, so that
# the same message delivered twice (a stuck one let go) is held twice, apart.
Ticket = tuple[int, int]
UNSEQUENCED = 1 << 62


@dataclass
class _Sender:
    held: dict[Ticket, Key] = field(default_factory=dict)  # ticket -> the message's key
    asking: dict[Ticket, asyncio.Event] = field(default_factory=dict)  # set when its turn comes
    active: Ticket | None = None  # the one recording now
    moved_at: float = field(default_factory=time.monotonic)  # when one of its messages last left


class SenderTurns:
    def __init__(self) -> None:
        self._senders: dict[str, _Sender] = {}
        self._serial = itertools.count()

    def hold(self, sender: str, seq: int | None, key: Key) -> Ticket:
        """Register a message of ``sender`` held here (``seq``: its stream sequence)."""
        ticket = (UNSEQUENCED if seq is None else seq, next(self._serial))
        self._senders.setdefault(sender, _Sender()).held[ticket] = key
        return ticket

    def moved_at(self, sender: str) -> float | None:
        """When one of ``sender``'s messages held here last left (recorded or failed): a
        message queued behind a sender whose queue moves is not stuck, however long it waits."""
        state = self._senders.get(sender)
        return state.moved_at if state is not None else None

    def held_before(self, sender: str, ticket: Ticket, keys: Iterable[Key]) -> set[Key]:
        """Those of ``keys`` held here with a lower sequence than ``ticket``'s: the turn puts
        them first, so there is no need to wait for them to be recorded elsewhere."""
        state = self._senders.get(sender)
        if state is None:
            return set()
        wanted = set(keys)
        return {key for (seq, _), key in state.held.items() if seq < ticket[0] and key in wanted}

    @asynccontextmanager
    async def turn(self, sender: str, ticket: Ticket) -> AsyncIterator[None]:
        """Wait until ``ticket`` is the lowest held and nothing records; leaves on the way out
        (whatever happens, so one failing message does not stop its sender)."""
        state = self._senders[sender]
        ready = asyncio.Event()
        state.asking[ticket] = ready
        self._grant(state)
        try:
            await ready.wait()
            yield
        finally:
            self.leave(sender, ticket)

    def leave(self, sender: str, ticket: Ticket) -> None:
        """Forget a held message (recorded, failed, or dropped before its turn)."""
        state = self._senders.get(sender)
        if state is None:
            return
        state.held.pop(ticket, None)
        state.asking.pop(ticket, None)
        state.moved_at = time.monotonic()
        if state.active == ticket:
            state.active = None
        if not state.held:
            del self._senders[sender]
            return
        self._grant(state)

    def _grant(self, state: _Sender) -> None:
        if state.active is not None or not state.held:
            return
        lowest = min(state.held)
        ready = state.asking.get(lowest)
        if ready is not None:  # the lowest has asked: its turn (else the others wait for it)
            state.active = lowest
            ready.set()
