"""``relaydesk_parked_messages{kind, stream, reader}``: the messages parked now, read from the
``rd_parked`` bucket as ``relaydesk dlq list`` and ``GET /v1/dlq`` count them, and exported by
the API (the counters ``relaydesk_dead_letters_total`` / ``relaydesk_quarantined_total`` start
at each process's first increase and reset with it: they never said what waits for an operator).

A refresh reads only what changed in the bucket since the last one (nothing when nothing did),
not every record at every scrape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import services.dlq
from events import subjects
from events.parking import ParkedMessage, ParkingLot
from services.bus.embedded import EmbeddedNats
from services.dlq import ParkedNow, export_parked
from tests.integration.system import API_TOKEN, System, eventually, running_system, system_config
from tests.kv_gets import counting_kv_gets

pytestmark = pytest.mark.integration


def _record(stream: str, seq: int, kind: str, reader: str) -> ParkedMessage:
    return ParkedMessage(
        stream=stream,
        seq=seq,
        subject=f"{stream.lower()}.{seq}",
        kind=kind,  # type: ignore[arg-type]
        reader=reader,
        error="boom",
        parked_at=datetime.now(UTC),
        data=b'{"x": 1}',
    )


def _gauge(kind: str, stream: str, reader: str) -> float | None:
    return REGISTRY.get_sample_value("relaydesk_parked_messages", {"kind": kind, "stream": stream, "reader": reader})


async def test_counts_what_is_parked_now_reading_only_what_changed(clean_nc: NATS, uid: str) -> None:
    js = clean_nc.jetstream()
    lot = ParkingLot(js)
    intake, projector = f"intake-{uid}", f"projector-{uid}"
    for record in (
        _record(subjects.INBOUND_STREAM, 11, "dead_letter", intake),
        _record(subjects.INBOUND_STREAM, 12, "dead_letter", intake),
        _record(subjects.EVENTS_STREAM, 7, "quarantined", projector),
    ):
        assert await lot.park(record)
    parked = ParkedNow(js)

    counts = await parked.refresh()
    parked.export()
    assert counts == {
        ("dead_letter", subjects.INBOUND_STREAM, intake): 2,
        ("quarantined", subjects.EVENTS_STREAM, projector): 1,
    }
    # The same as what `relaydesk status` says (ParkingLot.counts reads every record).
    assert await lot.counts() == {"dead_letter": 2, "quarantined": 1}
    assert _gauge("dead_letter", subjects.INBOUND_STREAM, intake) == 2
    assert _gauge("quarantined", subjects.EVENTS_STREAM, projector) == 1

    # Nothing changed: one STREAM.INFO, no record read.
    reads = parked.reads
    assert await parked.refresh() == counts
    assert parked.reads == reads

    # A dead letter dropped (or re-driven: `retry` drops it too) is read as its marker alone.
    assert await lot.drop(f"{subjects.INBOUND_STREAM}.11")
    assert (await parked.refresh())[("dead_letter", subjects.INBOUND_STREAM, intake)] == 1
    assert parked.reads == reads + 1
    parked.export()
    assert _gauge("dead_letter", subjects.INBOUND_STREAM, intake) == 1

    # The last of a label set dropped: the series reads 0, it does not vanish.
    assert await lot.drop(f"{subjects.EVENTS_STREAM}.7")
    await parked.refresh()
    parked.export()
    assert _gauge("quarantined", subjects.EVENTS_STREAM, projector) == 0
    # A dropped key is never parked again (ParkingLot.park): still 0.
    assert not await lot.park(_record(subjects.EVENTS_STREAM, 7, "quarantined", projector))
    assert await parked.refresh() == {("dead_letter", subjects.INBOUND_STREAM, intake): 1}

    # A fresh reader (a restarted API) reads the whole bucket once and agrees.
    assert await ParkedNow(js).refresh() == {("dead_letter", subjects.INBOUND_STREAM, intake): 1}


async def test_parked_and_dropped_between_two_refreshes_is_not_counted(clean_nc: NATS, uid: str) -> None:
    js = clean_nc.jetstream()
    lot, parked = ParkingLot(js), ParkedNow(js)
    reader = f"router-{uid}"
    assert await parked.refresh() == {}
    assert await lot.park(_record(subjects.EVENTS_STREAM, 3, "quarantined", reader))
    assert await lot.drop(f"{subjects.EVENTS_STREAM}.3")
    assert await parked.refresh() == {}


def test_a_record_it_cannot_read_is_logged_and_counted_as_a_skip() -> None:
    """Not counted in the gauge, so said where it happened: a log line and
    ``relaydesk_skipped_total{where="dlq.parked_record"}``."""
    parked = ParkedNow(None)  # type: ignore[arg-type]  # folding reads nothing from NATS
    where = {"where": "dlq.parked_record"}
    before = REGISTRY.get_sample_value("relaydesk_skipped_total", where) or 0.0
    parked._fold("RD_EVENTS.9", b"not a parked record")
    assert parked.counts() == {}
    assert REGISTRY.get_sample_value("relaydesk_skipped_total", where) == before + 1


async def test_export_parked_keeps_going_until_stopped(clean_nc: NATS, uid: str) -> None:
    lot = ParkingLot(clean_nc.jetstream())
    reader = f"delivery-{uid}"
    stop = asyncio.Event()
    task = asyncio.create_task(export_parked(clean_nc, stop, every=0.05))
    try:
        assert await lot.park(_record(subjects.OUTBOUND_STREAM, 5, "dead_letter", reader))

        async def shown() -> bool:
            return _gauge("dead_letter", subjects.OUTBOUND_STREAM, reader) == 1

        await eventually(shown, timeout=15)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def api_only(tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[System]:
    monkeypatch.setattr(services.dlq, "PARKED_REFRESH_S", 0.1)
    async with running_system(system_config(tmp_path, clean_nats.url), clean_nats, services=("api",)) as system:
        yield system


async def test_the_api_exports_what_is_parked_now(api_only: System, uid: str) -> None:
    import nats

    reader = f"connector:sms-{uid}"
    labels = {"kind": "dead_letter", "stream": subjects.OUTBOUND_STREAM, "reader": reader}
    nc = await nats.connect(api_only.nats.url)
    try:
        assert await ParkingLot(nc.jetstream()).park(_record(subjects.OUTBOUND_STREAM, 9, "dead_letter", reader))
    finally:
        await nc.drain()

    async def scraped(value: float) -> bool:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with api_only.http.get(api_only.api + "/metrics", headers=headers) as resp:
            assert resp.status == 200
            text = await resp.text()
        return any(
            sample.name == "relaydesk_parked_messages" and sample.labels == labels and sample.value == value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        )

    await eventually(lambda: scraped(1.0), timeout=15)
    # Re-driven or dropped through the API: the gauge follows.
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with api_only.http.delete(f"{api_only.api}/v1/dlq/{subjects.OUTBOUND_STREAM}.9", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    await eventually(lambda: scraped(0.0), timeout=15)
    # ...with when it was read, so a value kept through a NATS outage is seen to be old.
    measured_at = REGISTRY.get_sample_value("relaydesk_measured_timestamp_seconds", {"what": "parked"})
    assert measured_at is not None and measured_at > time.time() - 60


async def test_a_listing_reads_the_parking_lot_in_one_pass(clean_nc: NATS, uid: str) -> None:
    """``relaydesk dlq list`` and ``GET /v1/dlq``: a get per parked record was a round trip each
    (found by a scale audit); dropped records stay out of the list."""
    lot = ParkingLot(clean_nc.jetstream())
    reader = f"intake-{uid}"
    records = [_record(subjects.INBOUND_STREAM, seq, "dead_letter", reader) for seq in range(1, 6)]
    for record in records:
        assert await lot.park(record)
    assert await lot.drop(records[0].key)
    with counting_kv_gets() as asked:
        listed = [r for r in await lot.list("dead_letter") if r.reader == reader]
    assert [r.seq for r in listed] == [2, 3, 4, 5] and asked == []
