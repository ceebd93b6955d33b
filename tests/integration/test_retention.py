"""``[retention] message_days`` as a deployment meets it: a customer's SMS is on their timeline;
once its day is past retention the same timeline, read from the API, says ``[expired]`` and
neither the log, the timelines database nor a rebuild of it gives the words back.

Time is moved with the clock the sweeps take (``services.retention._utc_now``), not waited for.
Before, the day key was erased and the log read ``[expired]``, but the timeline the API serves
(the projector's copy in SQLite or PostgreSQL) kept every word for good."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest

from events.model import MessageReceived
from events.personal import EXPIRED, CustomerKeys, PersonalDataCipher
from events.store import EventStore
from services import retention
from services.config import RetentionSettings
from services.embedded_nats import EmbeddedNats
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
            store = EventStore(nc, js, cipher=PersonalDataCipher(CustomerKeys(js)))

            async def log_expired() -> bool:
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
