"""One sender's messages recorded in the order they were published, across intake processes.

The customer guard keeps intake processes from forking a customer's history, but not from
recording a later message first: with a burst, process A may hold a sender's message 10 while
process B holds the same sender's message 60. So each process, for every batch it fetches,
reads the window of messages other processes may still hold: those after the consumer's ack
floor and before its own newest, minus its own (one ``CONSUMER.INFO`` and, when that window
is not empty, one batched direct get on ``RD_INBOUND``). A message of its own whose sender
has an earlier message in that window waits until that one is on the customer's history
(``Intake._wait_for_earlier``; bounded by ``ORDER_WAIT_S``). Within one process the sender's
turn (``services.intake.turns``) records the messages it holds lowest stream sequence first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import structlog
from nats.js import JetStreamContext

from events import subjects
from events.direct import DirectBatches, Raw
from events.model import InboundMessage
from services.intake.consumer import Intake
from services.intake.plan import is_automatic
from services.intake.settling import DURABLE, decode_record

log = structlog.get_logger(__name__)

MAX_WINDOW = 8192  # messages read per batch at most (several processes × their in-flight)

Key = tuple[str, str]  # (channel, provider message id): how the customer's history knows it


class OrderingWindow:
    def __init__(self, js: JetStreamContext, direct: DirectBatches, intake: Intake) -> None:
        self.js = js
        self.direct = direct
        self.intake = intake
        self._unsupported_logged = False
        # Every message above the ack floor this process has looked at: seq → (sender's
        # identity, key), None for what orders nothing (outcomes, automatic mail, bad ones).
        # Each message is read once per process, not once per batch.
        self._known: dict[int, tuple[str, Key] | None] = {}
        self._upto = 0  # every seq up to this one is in _known (or at or below the floor)

    def _note(self, seq: int, record: object) -> None:
        if not isinstance(record, InboundMessage) or is_automatic(record):
            self._known[seq] = None
            return
        identity = self.intake.identity_of(record)
        self._known[seq] = None if identity is None else (identity, (record.channel, record.provider_message_id))

    async def earlier(self, own: list[tuple[int, InboundMessage]], held: Iterable[int]) -> dict[int, tuple[Key, ...]]:
        """For each of ``own`` (stream seq, message): the same sender's earlier messages that
        another process may hold."""
        if not own:
            return {}
        info = await self.js.consumer_info(subjects.INBOUND_STREAM, DURABLE)
        floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        for seq in [seq for seq in self._known if seq <= floor]:
            del self._known[seq]
        for seq, message in own:
            self._note(seq, message)
        mine = {seq for seq, _ in own} | set(held)
        top = max(seq for seq, _ in own)
        start = max(floor + 1, self._upto + 1)
        if top - start > MAX_WINDOW:
            # A stuck message far behind: the order is kept by arrival only past it.
            self._upto = top
            return {}
        if start < top and any(seq not in self._known for seq in range(start, top)):
            others = await self._read(start, top)
            if others is None:
                return {}
            for seq, _subject, data, _headers in others:
                if seq not in self._known:
                    self._note(seq, decode_record(data))
        self._upto = max(self._upto, top)
        by_sender: dict[str, list[tuple[int, Key]]] = defaultdict(list)
        for seq, entry in self._known.items():
            if entry is not None and seq not in mine and seq < top:
                by_sender[entry[0]].append((seq, entry[1]))
        if not by_sender:
            return {}
        out: dict[int, tuple[Key, ...]] = {}
        for seq, message in own:
            identity = self.intake.identity_of(message)
            before = tuple(key for other, key in sorted(by_sender.get(identity or "", ())) if other < seq)
            if before:
                out[seq] = before
        return out

    async def _read(self, first: int, end: int) -> list[Raw] | None:
        """Messages of ``RD_INBOUND`` with ``first <= seq < end``; None when direct gets are
        not answered (the stream lacks ``allow_direct``, or the server is older than 2.11)."""
        out: list[Raw] = []
        seq = first
        while seq < end:
            answer = await self.direct.get(subjects.INBOUND_STREAM, subjects.INBOUND_ALL, seq, min(end - seq, 1000))
            if answer is None:
                if not self._unsupported_logged:
                    self._unsupported_logged = True
                    log.warning("intake.ordering_window_unavailable", reason="no batched direct get on RD_INBOUND")
                return None
            got, more = answer
            out.extend(raw for raw in got if raw[0] < end)
            if not more or not got or got[-1][0] >= end - 1:
                break
            seq = got[-1][0] + 1
        return out
