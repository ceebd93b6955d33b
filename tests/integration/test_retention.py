"""``[retention] message_days`` as a deployment meets it: a customer's SMS is on their timeline;
once its day is past retention the same timeline, read from the API, says ``[expired]`` and
neither the log, the timelines database nor a rebuild of it gives the words back.

Time is moved with the clock the sweeps take (``services.retention._utc_now``), not waited for.
Before, the day key was erased and the log read ``[expired]``, but the timeline the API serves
(the projector's copy in SQLite or PostgreSQL) kept every word for good."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from connectors.email.unparsed import RAW_OBJECT_HEADER
from events import subjects
from events.model import MessageReceived
from events.parking import ParkedMessage, ParkingLot
from events.personal import EXPIRED, CustomerKeys, PersonalDataCipher
from events.store import EventStore
from services import retention
from services.bus.embedded import EmbeddedNats
from services.config import RetentionSettings
from tests.integration.system import eventually, running_system, system_config

pytestmark = pytest.mark.integration

PHONE = "+15550001234"
TEXT = "my card ending 4242 was charged twice, please refund"


async def test_a_message_past_retention_leaves_the_timeline_too(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [datetime.now(UTC)]
    monkeypatch.setattr(retention, "_utc_now", lambda: now[0])
    monkeypatch.setattr(retention, "SWEEP_EVERY_S", 0.05)
    config = system_config(tmp_path, clean_nats.url)
    config.retention = RetentionSettings(message_days=30)
    db = Path(config.data_dir) / "timelines.db"
    async with running_system(config, clean_nats) as system:
        assert await system.send_sms("SM" + "r" * 32, PHONE, TEXT) == 200
        customer_id = await eventually(lambda: system.customer(PHONE))

        async def texts() -> list[str]:
            status, body = await system.get(f"/v1/customers/{customer_id}/timeline", limit="100")
            assert status == 200, body
            entries: list[dict[str, Any]] = body["entries"]
            return [e["text"] for e in entries if e["kind"] == "message_in"]

        async def shown() -> bool:
            return await texts() == [TEXT]

        await eventually(shown)

        now[0] += timedelta(days=31)  # a month on: the message's day is past the 30 days kept

        async def expired() -> bool:
            return await texts() == [EXPIRED]

        await eventually(expired)
        # The log too, for any reader (one not configured with retention included): the API's
        # sweep erased the day's key.
        nc = await nats.connect(clean_nats.url)
        try:
            js = nc.jetstream()

            async def log_expired() -> bool:
                # A reader new at each look: a reader keeps the day keys it read, so one that
                # read the log before the API's sweep (the projector's sweep can come first on
                # a loaded machine) went on reading the text: this test timed out 2 runs in 30.
                store = EventStore(nc, js, cipher=PersonalDataCipher(CustomerKeys(js)))
                log = await store.read_customer(customer_id)
                return [e.event.text for e in log if isinstance(e.event, MessageReceived)] == [EXPIRED]

            await eventually(log_expired)
        finally:
            await nc.close()
    assert holding(db.parent, TEXT) == []


def holding(directory: Path, secret: str) -> list[str]:
    """The timelines database's files (``-wal``, ``-shm`` too) that hold ``secret``'s bytes."""
    files = [f for f in directory.iterdir() if f.name.startswith("timelines.db")]
    assert files
    return [f.name for f in files if secret.encode() in f.read_bytes()]


async def test_parked_messages_past_retention_are_dropped(clean_nc: NATS) -> None:
    """A dead letter keeps the raw provider message (the customer's text in clear), an
    unparseable mail its raw bytes in the attachments store: kept for good before. Past the
    cutoff they go; a quarantined log event (its body sealed with a day key) stays visible."""
    js = clean_nc.jetstream()
    lot = ParkingLot(js)
    parked_at = datetime(2026, 1, 9, 23, 59, tzinfo=UTC)
    raw_mail = f"From: ann@example.com\r\nSubject: x\r\n\r\n{TEXT}".encode()
    digest = hashlib.sha256(raw_mail).hexdigest()
    objects = await js.create_object_store("rd_attachments")
    await objects.put(digest, raw_mail)

    def record(stream: str, seq: int, data: bytes, **headers: str) -> ParkedMessage:
        return ParkedMessage(
            stream=stream,
            seq=seq,
            subject=f"rd.inbound.sms.{seq}",
            kind="dead_letter",
            reader="intake",
            error="boom",
            parked_at=parked_at,
            data=data,
            headers=headers,
        )

    await lot.park(record(subjects.INBOUND_STREAM, 1, f"Body={TEXT}".encode()))
    await lot.park(record("email", 2, raw_mail, **{RAW_OBJECT_HEADER: f"nats-object://rd_attachments/{digest}"}))
    await lot.park(msgspec.structs.replace(record(subjects.EVENTS_STREAM, 3, b"{}"), kind="quarantined"))
    await lot.park(
        msgspec.structs.replace(
            record(subjects.INBOUND_STREAM, 4, b"Body=recent"), parked_at=parked_at + timedelta(days=1)
        )
    )

    kept_day = (parked_at + timedelta(days=30)).date()  # the day it was parked is still kept
    assert await retention.expire_parked(js, 30, kept_day) == 0
    assert await retention.expire_parked(js, 30, kept_day + timedelta(days=1)) == 2
    assert [(r.stream, r.seq) for r in await lot.list()] == [(subjects.EVENTS_STREAM, 3), (subjects.INBOUND_STREAM, 4)]
    info = await objects.get_info(digest, show_deleted=True)
    assert info.deleted  # the raw mail went with its record
