"""Quarantine: what a reader of the log does with a message it cannot decode or apply.

One mechanism for every reader of ``RD_EVENTS`` (router, projector, API, reports, delivery,
intake, rebuild, the customers tool): the message is

- logged once per reader and process (``log.quarantined``, warning, with stream, sequence,
  subject, the customer/conversation the subject names, the error and the reader; never the
  payload),
- counted in ``relaydesk_quarantined_total{reader, stream}`` (prometheus_client),
- parked in ``rd_parked`` as ``ParkedMessage(kind="quarantined")`` with the payload exactly
  as it stands in the stream (create-only: ten readers and a hundred restarts park it once),
- and skipped: the reader goes on with the next message. The log is untouched.

``EventStore`` calls it for payloads that do not decode (``events.codec.Undecodable``); the
service loops call ``EventStore.cannot_apply`` for events their fold raised on. A parking
that fails (NATS away, no bucket) is logged and tried again the next time a reader meets the
message (the next start at the latest): a reader never stops for it.

This module is the one place in ``events/`` that logs and counts (structlog and
prometheus_client, beside msgspec and nats).
"""

from __future__ import annotations

import asyncio

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter

from events import subjects
from events.parking import ParkedMessage, ParkingLot, now
from events.skips import count_skip

log = structlog.get_logger("relaydesk.quarantine")

QUARANTINED = Counter(
    "relaydesk_quarantined_total",
    "Log messages a reader could not decode or apply, and skipped (once per reader, message and process).",
    ["reader", "stream"],
)

# What became of a quarantined message, as its log line says.
PARKED = "skipped; parked in rd_parked (`relaydesk dlq list`)"
PARKED_BEFORE = "skipped; parked before (or dropped by an operator since)"
NOT_PARKED = "skipped; not parked (NATS refused): the next reader to meet it parks it"

# How many (reader, stream, sequence) a process remembers having reported; past that it
# forgets them all (a flood of poison), and reports again what it meets again.
REMEMBER = 100_000


class Quarantine:
    """Reports and parks quarantined messages for every reader sharing one ``EventStore``."""

    def __init__(self, js: JetStreamContext, lot: ParkingLot | None = None) -> None:
        self.js = js
        self.lot = lot or ParkingLot(js)
        self._reported: set[tuple[str, str, int]] = set()
        self._parked: set[tuple[str, int]] = set()
        self._parking: set[asyncio.Task[None]] = set()

    def report(self, reader: str, stream: str, seq: int, subject: str, error: str, *, action: str = PARKED) -> bool:
        """Log and count one quarantined message, once per reader and process. True if new."""
        if not self._first(reader, stream, seq):
            return False
        self._say(reader, stream, seq, subject, error, action)
        return True

    def _first(self, reader: str, stream: str, seq: int) -> bool:
        """Whether this reader meets the message for the first time in this process (counted)."""
        key = (reader, stream, seq)
        if key in self._reported:
            return False
        if len(self._reported) >= REMEMBER:
            self._reported.clear()
        self._reported.add(key)
        QUARANTINED.labels(reader=reader, stream=stream).inc()
        return True

    def _say(self, reader: str, stream: str, seq: int, subject: str, error: str, action: str) -> None:
        # Parked now: a warning. Parked before (or dropped by an operator since): what every
        # later reader, and every one-shot tool such as `relaydesk status`, meets: info.
        scope = subjects.parse_conversation_subject(subject)
        (log.info if action == PARKED_BEFORE else log.warning)(
            "log.quarantined",
            reader=reader,
            stream=stream,
            seq=seq,
            subject=subject,
            customer_id=scope[0] if scope else None,
            conversation_id=scope[1] if scope and scope[1] != subjects.CUSTOMER_SCOPE else None,
            error=error[:500],
            action=action,
        )

    async def record(
        self,
        reader: str,
        seq: int,
        subject: str,
        error: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        stream: str = subjects.EVENTS_STREAM,
    ) -> None:
        """Report (once) and park (once) a message; ``data`` None: read it from the stream."""
        await self._park(reader, stream, seq, subject, error, data, headers, say=self._first(reader, stream, seq))

    def record_soon(self, reader: str, seq: int, subject: str, error: str, *, data: bytes | None = None) -> None:
        """``record`` for synchronous code (a fold loop): counted now, parked and said in a task."""
        stream = subjects.EVENTS_STREAM
        if (stream, seq) in self._parked:  # this process parked it already: nothing to wait for
            self.report(reader, stream, seq, subject, error, action=PARKED_BEFORE)
            return
        say = self._first(reader, stream, seq)
        task = asyncio.get_running_loop().create_task(
            self._park(reader, stream, seq, subject, error, data, None, say=say), name=f"park-{seq}"
        )
        self._parking.add(task)
        task.add_done_callback(self._parking.discard)

    async def settle(self) -> None:
        """Wait for the parkings under way (a one-shot command, before it disconnects)."""
        while self._parking:
            await asyncio.gather(*tuple(self._parking), return_exceptions=True)

    async def _park(
        self,
        reader: str,
        stream: str,
        seq: int,
        subject: str,
        error: str,
        data: bytes | None,
        headers: dict[str, str] | None,
        *,
        say: bool,
    ) -> None:
        """Park it once, and with ``say`` log what became of it: ``PARKED`` now,
        ``PARKED_BEFORE`` (or dropped since), ``NOT_PARKED``."""
        action = PARKED_BEFORE
        if (stream, seq) not in self._parked:
            if len(self._parked) >= REMEMBER:
                self._parked.clear()
            self._parked.add((stream, seq))
            try:
                if data is None:
                    raw = await self.js.get_msg(stream, seq, direct=True)
                    data, headers = raw.data or b"", dict(raw.headers or {})
                parked = ParkedMessage(
                    stream=stream,
                    seq=seq,
                    subject=subject,
                    kind="quarantined",
                    reader=reader,
                    error=error,
                    parked_at=now(),
                    data=data,
                    headers=dict(headers or {}),
                )
                action = PARKED if await self.lot.park(parked) else PARKED_BEFORE
            except Exception as err:
                # Not fatal, and not forgotten: the next reader to meet it parks it.
                self._parked.discard((stream, seq))
                log.warning("log.park_failed", reader=reader, stream=stream, seq=seq, subject=subject, error=repr(err))
                count_skip("log.park")
                action = NOT_PARKED
        if say:
            self._say(reader, stream, seq, subject, error, action)
