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

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError

from events import subjects
from events.model import InboundMessage

log = structlog.get_logger(__name__)

# Held messages with no sender (reply outcomes, undecodable ones) each take a slot.
NO_SENDER = ""
# The durable's max_ack_pending: messages handed out and not yet acked, across every intake
# process. JetStream's default (1,000) let a burst of one sender over ~1,000 messages hold
# everything published after it (the flood audit: 3,000 SMS from one number posted in 4 s held
# another customer's first message 12 s).
MAX_ACK_PENDING = 10_000
# What one process holds at most: messages (under ordering.MAX_WINDOW, which keeps one sender's
# order across processes) and bytes (a held mail is up to the server's max_payload).
MAX_HELD = 8_000
MAX_HELD_BYTES = 64 << 20


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


async def widen(js: JetStreamContext, durable: str) -> int:
    """Bring the durable's ``max_ack_pending`` up to ``MAX_ACK_PENDING`` in place (made by an
    older version, or with the server's default); returns what it is now (-1: unbounded)."""
    info = await js.consumer_info(subjects.INBOUND_STREAM, durable)
    now = int(info.config.max_ack_pending or -1)
    if now == -1 or now >= MAX_ACK_PENDING:
        return now
    try:
        await js.add_consumer(
            subjects.INBOUND_STREAM, dataclasses.replace(info.config, max_ack_pending=MAX_ACK_PENDING)
        )
    except BadRequestError as err:  # an older server: intake holds what the durable allows
        log.warning("intake.max_ack_pending_kept", max_ack_pending=now, wanted=MAX_ACK_PENDING, error=str(err))
        return now
    log.info("intake.max_ack_pending_raised", before=now, after=MAX_ACK_PENDING)
    return MAX_ACK_PENDING


def held_limit(max_ack_pending: int) -> int:
    """Messages one process may hold: ``MAX_HELD``, a little under the durable's limit."""
    if max_ack_pending <= 0:
        return MAX_HELD
    return max(1, min(MAX_HELD, max_ack_pending - max_ack_pending // 25))
