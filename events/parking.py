"""The parking lot: messages a reader could not decode or apply, set aside instead of stopping it.

Two kinds land here, in the ``rd_parked`` KV bucket, one record per stream message:

- ``quarantined``: a message on a log a reader folds (``RD_EVENTS``) that does not decode or
  cannot be applied. The reader logs it once, counts it, records it here and goes on with the
  next one; the log itself is untouched (it is append-only).
- ``dead_letter``: a work message (``RD_INBOUND``, ``RD_OUTBOUND``, a delivery) that failed
  every bounded redelivery; its consumer terminated it and recorded it here with the error,
  so an operator can look at it and re-drive it (``relaydesk dlq retry``).

The key is ``<stream>.<sequence>``: every reader of the same bad message parks one record
(create-only), so ten readers and a hundred restarts still show it once.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Literal

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from events.stream_scan import bucket_values

PARKED_BUCKET = "rd_parked"

ParkedKind = Literal["quarantined", "dead_letter"]


class ParkedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One parked message, with everything needed to understand and re-drive it."""

    stream: str
    seq: int
    subject: str
    kind: ParkedKind
    reader: str  # the service that parked it: intake, router, projector, api, delivery, connector:sms, …
    error: str
    parked_at: datetime
    data: bytes = b""  # the raw payload as it stood in the stream
    headers: dict[str, str] = {}
    deliveries: int = 0  # how many times it was delivered before it was parked (work messages)

    @property
    def key(self) -> str:
        return parked_key(self.stream, self.seq)

    def preview(self, limit: int = 120) -> str:
        """The start of the payload as text, for a listing (never the whole body)."""
        text = self.data[:limit].decode("utf-8", errors="replace")
        return text + ("…" if len(self.data) > limit else "")


def parked_key(stream: str, seq: int) -> str:
    return f"{stream}.{seq}"


# Every key ``parked_key`` makes; also within what a KV key may be, so a key from outside (an
# operator's URL: ``*``, ``>``, ``..``, a NUL) is never handed to the bucket, which raises on it.
_PARKED_KEY = re.compile(r"[-/_=A-Za-z0-9]{1,200}\.[0-9]{1,20}")


def is_parked_key(key: str) -> bool:
    return _PARKED_KEY.fullmatch(key) is not None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ParkedMessage)


def now() -> datetime:
    return datetime.now(UTC)


class ParkingLot:
    """The ``rd_parked`` bucket. Created by ``events.streams.ensure_streams``."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.js.key_value(PARKED_BUCKET)
        return self._kv

    async def park(self, record: ParkedMessage) -> bool:
        """Record ``record`` unless that stream message is parked already, or was and has
        been dropped. True if new.

        Strictly create-only (``update`` expecting no revision at all), not ``kv.create``:
        that one recreates a dropped key, and every reader meeting a dropped quarantined
        message again would park it again; it also reads the key back on a conflict, which
        roles that may only write the bucket cannot do."""
        kv = await self._bucket()
        try:
            await kv.update(record.key, _encoder.encode(record), last=0)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def get(self, key: str) -> ParkedMessage | None:
        if not is_parked_key(key):
            return None  # nothing is ever parked under it
        kv = await self._bucket()
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            return None
        if entry.value is None:
            return None
        return _decoder.decode(entry.value)

    async def drop(self, key: str) -> bool:
        """Forget a parked record (after a retry, or when an operator decides it is junk)."""
        if await self.get(key) is None:
            return False
        kv = await self._bucket()
        await kv.purge(key)
        return True

    async def list(self, kind: ParkedKind | None = None) -> list[ParkedMessage]:
        """Every parked record (oldest stream position first within a stream), read in one pass
        over the bucket (a get per record was a round trip each: the parked-messages gauge and
        every listing paid it for every record)."""
        out: list[ParkedMessage] = []
        async for key, value in bucket_values(self.js, PARKED_BUCKET):
            if not is_parked_key(key):
                continue
            record = _decoder.decode(value)
            if kind is None or record.kind == kind:
                out.append(record)
        return sorted(out, key=lambda r: (r.stream, r.seq))

    async def counts(self) -> dict[str, int]:
        """How many records of each kind are parked."""
        counts = {"quarantined": 0, "dead_letter": 0}
        for record in await self.list():
            counts[record.kind] += 1
        return counts


def encode_payload_for_display(data: bytes) -> str:
    """The payload for JSON output: text when it is UTF-8, else base64 marked as such."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()
