"""A mail that cannot be parsed is kept, not refused: stored raw and parked for an operator.

Refusing it (SMTP 4xx) makes the sender's server retry for days and then bounce the customer;
refusing it 5xx loses what they wrote. So the connector answers ``250`` (the IMAP poller goes
on with the next mail), and:

* the raw bytes go into the attachments object store under their sha256
  (``nats-object://<attachment_bucket>/<sha256>``, the same place and naming as attachments);
* a ``ParkedMessage(kind="quarantined", reader="connector:email")`` goes into ``rd_parked``
  under the key ``email.<n>`` (``n``: the first 52 bits of the sha256, so the same bytes sent
  again park one record), with the parse error, the first ``PREVIEW_BYTES`` of the mail as
  its data and the object's address in its headers (``Relaydesk-Raw-Object``). It shows in
  ``relaydesk dlq list``; it is never re-driven (``retryable: false``): an operator reads it
  (``relaydesk dlq show email.<n>``, or the object), answers the customer by hand if it was
  one, and drops it.

A mail the IMAP poller finds over ``max_body_bytes`` is not fetched whole: its first
``PREVIEW_BYTES`` (the header section and the start of the body) are parked the same way
(``park_too_large``, error ``too large: …``), with no raw object, and the poller goes on.

Storing or parking needs NATS: when NATS is away that raises ``Unavailable`` (SMTP ``451``,
the sender retries later), which is about the server, never the mail.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import structlog
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from connectors.sdk import Unavailable
from events import subjects
from events.parking import ParkedMessage, ParkingLot, now

log = structlog.get_logger("relaydesk.connector.email.unparsed")

PARKED_STREAM = "email"
READER = "connector:email"
PREVIEW_BYTES = 64 * 1024  # a KV value stays well under NATS's max_payload
RAW_OBJECT_HEADER = "Relaydesk-Raw-Object"


def parked_seq(digest: str) -> int:
    """A stable number for the same bytes (52 bits: exact in JSON and JavaScript)."""
    return int(digest[:13], 16)


async def park_unparsed(
    js: JetStreamContext,
    objects: Callable[[], Awaitable[ObjectStore]],
    *,
    raw: bytes,
    source: str,
    error: str,
    bucket: str,
    timeout: float,
    logged_as: str = "email.unparseable_parked",
) -> str:
    """Store ``raw`` and park it; returns the parked record's key. Raises ``Unavailable``.
    ``logged_as``: the log line's event (a forged sender is not an unparseable mail)."""
    digest = hashlib.sha256(raw).hexdigest()
    url = f"nats-object://{bucket}/{digest}"
    record = _record(
        digest,
        error[:2000],
        raw[:PREVIEW_BYTES],
        {RAW_OBJECT_HEADER: url, "Relaydesk-Raw-Size": str(len(raw)), "Relaydesk-Source": source},
    )
    try:
        async with asyncio.timeout(timeout):
            store = await objects()
            await store.put(digest, raw)
            new = await ParkingLot(js).park(record)
    except Exception as err:
        raise Unavailable(f"unparseable mail not parked: {type(err).__name__}") from err
    log.warning(
        logged_as,
        key=record.key,
        source=source,
        size=len(raw),
        error=error[:300],
        already_parked=not new,
    )
    return record.key


async def park_too_large(
    js: JetStreamContext,
    *,
    head: bytes,
    size: int,
    limit: int,
    source: str,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> str:
    """Park a mail too large to take (only its first bytes, ``head``, were read); returns the
    record's key. The same mail seen again parks one record. Raises ``Unavailable``."""
    head = head[:PREVIEW_BYTES]
    digest = hashlib.sha256(head + b"\0" + str(size).encode()).hexdigest()
    error = f"too large: {size} bytes, over max_body_bytes ({limit}); not taken, its first {len(head)} bytes kept here"
    record = _record(
        digest, error, head, {"Relaydesk-Raw-Size": str(size), "Relaydesk-Source": source, **(headers or {})}
    )
    try:
        async with asyncio.timeout(timeout):
            new = await ParkingLot(js).park(record)
    except Exception as err:
        raise Unavailable(f"oversize mail not parked: {type(err).__name__}") from err
    log.warning("email.too_large_parked", key=record.key, source=source, size=size, limit=limit, already_parked=not new)
    return record.key


def _record(digest: str, error: str, data: bytes, headers: dict[str, str]) -> ParkedMessage:
    """A parked record of a mail the connector could not take, one per ``digest``."""
    return ParkedMessage(
        stream=PARKED_STREAM,
        seq=parked_seq(digest),
        subject=subjects.inbound("email"),
        kind="quarantined",
        reader=READER,
        error=error,
        parked_at=now(),
        data=data,
        headers=headers,
    )
