"""One sender's flood does not hold other customers' messages in intake (the flood audit).

A sender's messages are recorded one at a time, so a flood from one sender is recorded at the
speed of one chain of round trips. Intake counted each of them against its in-flight limit:
the flood took every slot and another customer's message, published just after it, was
recorded only once nearly all of the flood was (services/intake/shares.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from events import subjects
from events.codec import decode_log_event, encode
from events.model import InboundMessage, MessageReceived
from events.store import EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.intake import Intake
from services.intake.settling import DURABLE, consumer_config, prepare
from services.intake.shares import MAX_ACK_PENDING
from services.intake.worker import IN_PROGRESS_LIMIT_S, IntakeWorker
from tests.integration.system import eventually

pytestmark = pytest.mark.integration

FLOOD = 1500  # over JetStream's default max_ack_pending (1,000)


@pytest.fixture
async def private(clean_nats: EmbeddedNats) -> AsyncIterator[tuple[NATS, EventStore]]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    yield nc, EventStore(nc, nc.jetstream())
    await nc.drain()


def sms(pmid: str, sender: str, text: str) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC), channel="sms", provider="twilio", provider_message_id=pmid, sender=sender, text=text
    )


async def test_a_flood_from_one_sender_leaves_room_for_everyone_else(private: tuple[NATS, EventStore]) -> None:
    nc, store = private
    js = nc.jetstream()
    watch = await prepare(nc)
    recorded: list[str] = []

    async def seen(msg: Msg) -> None:
        event = decode_log_event(msg.data, subject=msg.subject)
        if isinstance(event, MessageReceived):
            recorded.append(event.provider_message_id)

    sub = await nc.subscribe(subjects.EVENTS_ALL, cb=seen, pending_msgs_limit=1_000_000)
    try:
        flood = [sms(f"SMflood{n:04d}", "+15550000001", f"buy now {n}") for n in range(FLOOD)]
        others = [sms(f"SMother{n}", f"+1555000010{n}", "where is my order?") for n in range(3)]
        for message in [*flood, *others]:
            await js.publish(subjects.inbound("sms"), encode(message))

        directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
        stop = asyncio.Event()
        worker = IntakeWorker(nc, Intake(store, directory, IntakeSettings()), batch=8, in_flight=16, lag_every=0.2)
        running = asyncio.create_task(worker.run(stop))
        try:

            async def all_recorded() -> bool:
                return len(recorded) >= FLOOD + len(others)

            await eventually(all_recorded, timeout=180)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(running, 15)
    finally:
        await sub.unsubscribe()
        await watch.stop()

    flood_ids = [m.provider_message_id for m in flood]
    # The flood keeps its own order...
    assert [pmid for pmid in recorded if pmid.startswith("SMflood")] == flood_ids
    # ...and the others, published after all of it, do not wait for it: each is recorded while
    # most of the flood still waits (before: after all but the last in-flight slots of it).
    for other in others:
        before = recorded.index(other.provider_message_id)
        assert before < 300, f"{other.provider_message_id} recorded after {before} of the flood"


async def test_a_durable_an_older_version_made_gets_room_for_a_burst(private: tuple[NATS, EventStore]) -> None:
    """Made with JetStream's default max_ack_pending (1,000): raised in place at the start."""
    nc, _ = private
    js = nc.jetstream()
    old = dataclasses.replace(consumer_config(), max_ack_pending=None, name=DURABLE)
    await js.add_consumer(subjects.INBOUND_STREAM, old)
    assert (await js.consumer_info(subjects.INBOUND_STREAM, DURABLE)).config.max_ack_pending == 1000
    watch = await prepare(nc)
    try:
        info = await js.consumer_info(subjects.INBOUND_STREAM, DURABLE)
        assert info.config.max_ack_pending == MAX_ACK_PENDING
        assert info.config.max_deliver == consumer_config().max_deliver  # the rest as it was made
    finally:
        await watch.stop()


class HeldMessage:
    """What still_working reads of a delivery: its sequence, and an in-progress ack."""

    def __init__(self, seq: int) -> None:
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=seq))
        self.renewed = 0

    async def in_progress(self) -> None:
        self.renewed += 1


async def test_a_message_queued_behind_its_senders_flood_is_not_let_go_while_the_queue_moves(
    private: tuple[NATS, EventStore],
) -> None:
    """A plan held past IN_PROGRESS_LIMIT_S is let go (redelivered, parked after max_deliver):
    a message queued behind its sender's 8,000 waits that long when each takes 15 ms, and was let
    go though its sender's messages were being recorded all along."""
    nc, store = private
    directory = IdentityDirectory(await nc.jetstream().key_value(subjects.IDENTITY_BUCKET))
    worker = IntakeWorker(nc, Intake(store, directory, IntakeSettings()))
    turns = worker.intake.turns
    first = turns.hold("bot", 1, ("sms", "SM1"))
    turns.hold("bot", 2, ("sms", "SM2"))
    turns.leave("bot", first)  # the sender's queue moved just now
    queued, stuck = HeldMessage(2), HeldMessage(3)
    long_ago = time.monotonic() - IN_PROGRESS_LIMIT_S - 10
    waiting = asyncio.create_task(asyncio.Event().wait())
    alone = asyncio.create_task(asyncio.Event().wait())
    try:
        worker._deliveries[waiting] = (queued, long_ago)  # type: ignore[assignment]
        worker._senders[waiting] = "bot"
        worker._deliveries[alone] = (stuck, long_ago)  # type: ignore[assignment]
        worker._senders[alone] = "someone"  # held nothing else: nothing moved for it
        assert await worker.still_working(time.monotonic()) == 1
        assert queued.renewed == 1 and waiting in worker._deliveries
        assert stuck.renewed == 0 and alone not in worker._deliveries  # let go, as before
    finally:
        waiting.cancel()
        alone.cancel()
