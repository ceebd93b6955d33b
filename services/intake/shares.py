"""How much of intake's concurrency a sender takes: one slot, however many of its messages wait.

A sender's messages are recorded one at a time (``services.intake.turns``), each a chain of
round trips (~5 ms): one sender is recorded at ~200 messages a second whatever else is free.
The worker counted every message it held against ``in_flight``, so a flood from one sender
(a chat bot, a mail loop, a phone number spamming SMS: found by the flood audit) filled every
slot with messages queued behind each other, nothing else was fetched, and every other
customer's message waited for the flood to be recorded: 3,000 messages of one sender held a
message of another for 13 s, and a flood faster than 200 a second held them for as long as it
lasted. Here a sender's held messages count as one slot (what one sender can use at a time),
and the messages merely waiting for their turn are bounded apart (``max_held``: memory, and the
consumer's ``max_ack_pending``), so other senders' messages are fetched and recorded beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from events.model import InboundMessage

# Held messages with no sender (reply outcomes, undecodable ones) each take a slot.
NO_SENDER = ""


@dataclass
class SenderShares:
    _held: dict[str, int] = field(default_factory=dict)  # sender -> its messages held here
    _unsendered: int = 0

    @property
    def active(self) -> int:
        """Slots in use: one per sender holding messages, one per message with no sender."""
        return len(self._held) + self._unsendered

    def take(self, sender: str) -> None:
        if sender == NO_SENDER:
            self._unsendered += 1
        else:
            self._held[sender] = self._held.get(sender, 0) + 1

    def give_back(self, sender: str) -> None:
        if sender == NO_SENDER:
            self._unsendered = max(0, self._unsendered - 1)
            return
        left = self._held.get(sender, 0) - 1
        if left > 0:
            self._held[sender] = left
        else:
            self._held.pop(sender, None)

    def held_by(self, sender: str) -> int:
        return self._held.get(sender, 0)


def sender_of(record: object, identity_of: Callable[[InboundMessage], str | None]) -> str:
    """The sender ``record`` is ordered under (``Intake.identity_of``), ``NO_SENDER`` if none."""
    if not isinstance(record, InboundMessage):
        return NO_SENDER
    return identity_of(record) or NO_SENDER
