"""The raw pull intake (services/intake/worker.py) and intake lag (services/intake/lag.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import nats
import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import encode
from events.model import InboundMessage, MessageReceived
from events.parking import ParkingLot
from events.store import EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.intake import Intake
from services.intake.lag import OLDEST_AGE, PENDING, export, read_lag
from services.intake.settling import prepare
from services.intake.worker import IntakeWorker
from services.metrics import MEASURED_AT
from tests.integration.system import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def private(clean_nats: EmbeddedNats) -> AsyncIterator[tuple[NATS, EventStore]]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    yield nc, EventStore(nc, nc.jetstream())
    await nc.drain()


def sms(n: int) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC),
        channel="sms",
        provider="twilio",
        provider_message_id=f"SMwork{n:04d}",
        sender=f"+1555{n % 7:07d}",
        text=f"message {n}: my invoice is wrong",
    )


async def test_lag_counts_what_waits_then_the_worker_records_it_all(private: tuple[NATS, EventStore]) -> None:
    nc, store = private
    js = nc.jetstream()
    watch = await prepare(nc)
    try:
        messages = [sms(n) for n in range(40)]
        for message in messages:
            await js.publish(subjects.inbound("sms"), encode(message))
        bad = await js.publish(subjects.inbound("sms"), b"\x00 not an inbound message")

        # Nothing runs yet: all of it waits, the oldest since it was published.
        lag = await read_lag(js, now=datetime.now(UTC) + timedelta(seconds=60))
        assert lag.unprocessed == 41 and lag.ack_floor == 0
        assert 59.0 <= lag.oldest_age_s < 120.0
        before = time.time()
        export(lag)
        assert PENDING._value.get() == 41 and OLDEST_AGE._value.get() == lag.oldest_age_s
        # ...and when it was read: while NATS is away the two keep their value, this says how old.
        assert MEASURED_AT.labels(what="intake_lag")._value.get() >= before

        directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
        stop = asyncio.Event()
        worker = IntakeWorker(nc, Intake(store, directory, IntakeSettings()), batch=8, in_flight=16, lag_every=0.2)
        running = asyncio.create_task(worker.run(stop))
        try:

            async def recorded() -> list[MessageReceived] | None:
                got = [s.event for s in await store.read() if isinstance(s.event, MessageReceived)]
                return got if len(got) >= len(messages) else None

            received = await eventually(recorded, timeout=60)
            # The undecodable one is parked at once, and blocks nothing.
            parked = await eventually(lambda: ParkingLot(js).get(f"{subjects.INBOUND_STREAM}.{bad.seq}"))
            assert parked.reader == "intake" and parked.deliveries == 1

            async def drained() -> bool:
                now = await read_lag(js)
                return now.unprocessed == 0 and now.oldest_age_s == 0.0 and PENDING._value.get() == 0

            await eventually(drained, timeout=30)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(running, 15)
        assert sorted(e.provider_message_id for e in received) == sorted(m.provider_message_id for m in messages)
        # One sender's messages in the order they were published (7 senders, interleaved).
        for sender in {m.sender for m in messages}:
            mine = [m.provider_message_id for m in messages if m.sender == sender]
            assert [e.provider_message_id for e in received if e.provider_message_id in mine] == mine
    finally:
        await watch.stop()
