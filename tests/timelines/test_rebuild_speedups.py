"""What the rebuild does faster must give what the slower way gave: timestamps written in one
pass (``rowmap.iso_many``) read as ``codec.iso`` writes them, and the customer keys preloaded
by batched direct gets are the keys an ordered consumer reads (with many batches, and where
nats-py offers no raw delivery)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone

import nats
import pytest

from events.personal import keys as keys_module
from events.personal.keys import KEYS_ALL, CustomerKeys, _record_decoder
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.timelines.codec import iso
from services.timelines.rowmap import iso_many


def test_iso_many_writes_what_iso_writes() -> None:
    plus_two = timezone(timedelta(hours=2))
    values: list[datetime | None] = [
        None,
        datetime(2026, 12, 1, 8, 0, 7, tzinfo=UTC),
        datetime(2026, 12, 1, 8, 0, 7, 123456, tzinfo=UTC),
        datetime(2026, 12, 1, 8, 0, 7, 1, tzinfo=UTC),
        datetime(2026, 12, 1, 8, 0, 7, 100000, tzinfo=UTC),
        datetime(2026, 12, 1, 8, 0, 7, 5),  # naive: taken as UTC
        datetime(2026, 12, 1, 1, 30, tzinfo=plus_two),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 3, 4, 5, 6, 7, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    assert iso_many(values) == [iso(v) for v in values]
    assert iso_many([]) == []


@pytest.fixture
async def nc(clean_nats: EmbeddedNats) -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(clean_nats.url)
    await ensure_streams(conn.jetstream())
    try:
        yield conn
    finally:
        await conn.drain()


async def _ordered(conn: nats.NATS) -> dict[str, bytes | None]:
    """The keys as the ordered consumer reads them (the way preload read them before)."""
    keys = CustomerKeys(conn.jetstream())
    async for msg in keys._each(KEYS_ALL):
        keys._remember(msg.subject, _record_decoder.decode(msg.data))
    return dict(keys._cache)


@pytest.mark.integration
@pytest.mark.parametrize("raw", [True, False], ids=["direct", "no-raw-delivery"])
async def test_preload_loads_every_key_and_tombstone(nc: nats.NATS, monkeypatch: pytest.MonkeyPatch, raw: bool) -> None:
    writer = CustomerKeys(nc.jetstream())
    customers = [f"cu{i}" for i in range(23)]
    for customer in customers:
        await writer.get_or_create(customer)
    await writer.get_or_create_day(customers[0], date(2026, 12, 1))
    await writer.system_key("identity")
    await writer.destroy(customers[1])
    await writer.destroy(customers[2])
    want = await _ordered(nc)
    assert len(want) >= 23 + 2 and want[f"rd.keys.{customers[1]}"] is None

    monkeypatch.setattr(keys_module, "PRELOAD_BATCH", 4)  # several round trips
    if not raw:
        monkeypatch.setattr("events.raw_delivery.raw_handlers", lambda _nc: None)
    reader = CustomerKeys(nc.jetstream())
    loaded = await reader.preload()
    assert loaded == len(want)
    assert reader._cache == want
    assert reader.preloaded
    assert await reader.get(customers[3]) == await writer.get(customers[3])
    assert await reader.get(customers[1]) is None


@pytest.mark.integration
async def test_preload_of_no_keys(nc: nats.NATS) -> None:
    keys = CustomerKeys(nc.jetstream())
    assert await keys.preload() == 0
    assert keys.preloaded
