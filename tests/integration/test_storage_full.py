"""JetStream with its storage used up (a disk filled by a log kept for months): found by a
long-run audit. The refusal came back as ``ServiceUnavailableError`` and was said as "NATS did
not answer" everywhere, with NATS's own words ("insufficient resources") cut from the logs; and
intake handed each message back like any failure, so after six deliveries (about 7.5 minutes)
it tried to park it, which needs storage too, and the message was left neither recorded nor
parked. Now intake holds what it has and fetches nothing new until JetStream takes writes
again, then records everything; the refusals are counted and said for what they are."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NoKeysError, NotFoundError, ServiceUnavailableError

from connectors.sdk import outbound
from connectors.sdk.conformance import FakeProvider, wait_for_outcome
from connectors.sdk.deadletter import Redelivery
from connectors.sdk.errors import Unavailable
from connectors.sdk.publish import InboundPublisher
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import InboundMessage, MessageReceived
from events.parking import PARKED_BUCKET
from events.storage_full import STORAGE_FULL_REFUSALS, storage_full
from events.store import EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.intake import Intake
from services.intake.settling import prepare
from services.intake.storage_wait import StorageWait
from services.intake.worker import IntakeWorker
from tests.connectors.outbound_rig import a_reply, queue, sms_runtime, twilio_queued
from tests.integration.system import eventually

pytestmark = pytest.mark.integration

FILLER = "NEIGHBOURS_FILES"


@pytest.fixture
async def small_nats(tmp_path: Path) -> AsyncIterator[NATS]:
    """A nats-server whose JetStream may store 4 MB in all."""
    conf = tmp_path / "small.conf"
    conf.write_text("jetstream { max_file_store: 4MB, max_memory_store: 1MB }\n")
    server = EmbeddedNats(store_dir=tmp_path / "js", config_file=conf)
    await server.astart()
    client = await nats.connect(server.url)
    await ensure_streams(client.jetstream())
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        await server.astop()


async def fill_up(nc: NATS) -> None:
    """Write into a stream of its own until JetStream refuses for want of storage."""
    js = nc.jetstream()
    await js.add_stream(name=FILLER, subjects=["filler.>"])
    for _ in range(10_000):
        try:
            await js.publish("filler.x", b"x" * 4096)
        except ServiceUnavailableError as err:
            assert storage_full(err), err
            return
    raise AssertionError("JetStream never filled up")


def refusals(where: str) -> float:
    return STORAGE_FULL_REFUSALS.labels(where=where)._value.get()


async def test_intake_waits_out_a_full_storage_and_then_records_every_message(small_nats: NATS) -> None:
    nc = small_nats
    js = nc.jetstream()
    store = EventStore(nc, js)
    watch = await prepare(nc)
    messages = [
        InboundMessage(
            at=datetime.now(UTC),
            channel="sms",
            provider="twilio",
            provider_message_id=f"SMfull{n:04d}",
            sender=f"+1555000{n:04d}",
            text=f"message {n}",
        )
        for n in range(3)
    ]
    for message in messages:
        await js.publish(subjects.inbound("sms"), encode(message))
    await fill_up(nc)

    directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
    # Handed back at once after a failure, as often as the consumer allows: the old way
    # spent all six deliveries in well under a second.
    quick = Redelivery(max_deliver=6, retry_delays=(0.05,), ack_wait=IntakeSettings().ack_wait_seconds)
    worker = IntakeWorker(nc, Intake(store, directory, IntakeSettings()), batch=8, in_flight=16, redelivery=quick)
    worker.storage = StorageWait(first_pause=0.05, max_pause=0.1)
    before = refusals("intake")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        # Long enough for six deliveries of each: tried in place more often than that (or, the
        # old way, delivered that often).
        async def long_enough() -> bool:
            info = await js.consumer_info(subjects.INBOUND_STREAM, subjects.INTAKE_DURABLE)
            return refusals("intake") - before >= 7 or (info.delivered.consumer_seq or 0) >= 3 * 6

        await eventually(long_enough, timeout=60)
        # The message taken first is still held, its one delivery unspent; the others were not
        # fetched meanwhile (they would have spent theirs); nothing was parked.
        info = await js.consumer_info(subjects.INBOUND_STREAM, subjects.INTAKE_DURABLE)
        assert info.num_redelivered == 0 and 1 <= info.num_ack_pending <= 3
        with pytest.raises(NoKeysError):
            await (await js.key_value(PARKED_BUCKET)).keys()

        await js.delete_stream(FILLER)  # the operator frees space

        async def recorded() -> list[MessageReceived] | None:
            got = [s.event for s in await store.read() if isinstance(s.event, MessageReceived)]
            return got if len(got) == 3 else None

        got = await eventually(recorded, timeout=60)
        assert sorted(e.provider_message_id for e in got) == [m.provider_message_id for m in messages]
    finally:
        stop.set()
        await running
        await watch.stop()


async def test_a_connector_tells_the_provider_to_retry_and_says_why(small_nats: NATS) -> None:
    await fill_up(small_nats)
    publisher = InboundPublisher(small_nats)
    before = refusals("connector")
    message = InboundMessage(
        at=datetime.now(UTC), channel="sms", provider="twilio", provider_message_id="SMfullx", sender="+15550001111"
    )
    with pytest.raises(Unavailable) as refused:
        await publisher.publish([message])
    assert refused.value.reason == "event bus refused the message: its storage is full"
    assert refusals("connector") == before + 1


async def test_a_connector_keeps_a_sent_replys_outcome_until_it_can_be_recorded(
    small_nats: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply went out, and its outcome could not be stored: the command was handed back
    after 15 s like any failure, each time spending a delivery, until parking it failed too and
    the outcome was never recorded (another process of the channel, not knowing it was sent,
    could send it again). Now the connector holds it and reports once there is room."""
    nc = small_nats
    js = nc.jetstream()
    # Handed back at once after a failed report, as often as the consumer allows (the old way).
    monkeypatch.setattr(outbound, "REDELIVERY", Redelivery(max_deliver=6, retry_delays=(0.05,), report_retry=0.2))
    fake = FakeProvider(handler=twilio_queued)
    await fake.start()
    runtime: ConnectorRuntime | None = None
    try:
        reply = a_reply("sms", "+15551230000")
        await queue(nc, reply)
        await fill_up(nc)
        before = refusals("connector")
        runtime = await sms_runtime(nc, fake)
        durable = f"connector_{subjects.token('sms')}"

        async def long_enough() -> bool:
            try:
                info = await js.consumer_info(subjects.OUTBOUND_STREAM, durable)
            except NotFoundError:  # the worker has not made its consumer yet
                return False
            return refusals("connector") - before >= 3 or (info.delivered.consumer_seq or 0) >= 6

        await eventually(long_enough, timeout=60)
        info = await js.consumer_info(subjects.OUTBOUND_STREAM, durable)
        assert info.num_redelivered == 0, "the command was handed back, spending its deliveries"
        assert len(fake.sends) == 1

        await js.delete_stream(FILLER)  # the operator frees space
        found = await wait_for_outcome(js, "sms", reply.reply_id, timeout=60)
        assert found.report.outcome == "sent"
        assert len(fake.sends) == 1
    finally:
        if runtime is not None:
            await runtime.stop()
        await fake.stop()
