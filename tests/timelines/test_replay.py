"""The batched ordered replay the rebuild and the projector's catch-up read with
(``events.replay``): the same events as ``EventStore.replay``, in order, nothing lost or
repeated through flow control held back and through a gap in delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from events import ordered_reader, subjects
from events.codec import Undecodable
from events.model import AgentStatusChanged, LogEvent
from events.ordered_reader import OrderedReader
from events.parking import ParkingLot
from events.replay import replay_batches, replay_discard
from events.store import Append, EventStore, StoredEvent
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from tests.integration.test_nats_security import Secured, as_role, secured, tool  # noqa: F401 (fixtures)
from tests.timelines.helpers import T0, Script, new_id

pytestmark = pytest.mark.integration

GARBAGE = b"\x00\xff this is not JSON {"


@pytest.fixture
async def own_store(clean_nats: EmbeddedNats) -> AsyncIterator[EventStore]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    try:
        yield EventStore(nc, nc.jetstream(), reader="replay-test")
    finally:
        await nc.drain()


async def a_log(store: EventStore, conversations: int) -> list[str]:
    """``conversations`` full conversations over a few customers, an agent event between
    each two (agent events are not customer events: a whole-stream read drops them)."""
    customers = [new_id("cu") for _ in range(5)]
    items: list[Append] = []
    for n in range(conversations):
        events: list[LogEvent] = Script(customers[n % 5], new_id("cv")).full()
        for event in events:
            items.append(Append(event))
        items.append(Append(AgentStatusChanged(at=T0, agent_id="ava", status="available" if n % 2 else "away")))
    await store.append_many(items)
    return customers


@pytest.fixture(params=["raw", "callback"])
def delivery(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Messages straight from nats-py's protocol parser (``raw``, the default where nats-py
    allows it), or through a subscription callback (the fallback): the same events either way."""
    if request.param == "callback":
        monkeypatch.setattr(ordered_reader, "raw_handlers", lambda nc: None)
    return str(request.param)


def key(events: list[StoredEvent]) -> list[tuple[int, str, Any]]:
    return [(e.seq, e.subject, e.event) for e in events]


async def read_all(store: EventStore, filter_subject: str, from_seq: int = 1, **kw: Any) -> list[list[StoredEvent]]:
    return [chunk async for chunk in replay_batches(store, filter_subject, from_seq, **kw)]


async def test_same_events_as_the_store_replay(own_store: EventStore, delivery: str) -> None:
    customers = await a_log(own_store, 30)
    end = await own_store.last_seq()
    for filter_subject, from_seq in [
        (subjects.CUSTOMER_EVENTS_ALL, 1),
        (subjects.CUSTOMER_EVENTS_ALL, end // 2),
        (subjects.EVENTS_ALL, 7),
        (subjects.customer_filter(customers[1]), 1),
        (subjects.customer_filter(customers[4]), end - 30),  # the last conversation is theirs
    ]:
        expected = await own_store.read(filter_subject, from_seq)
        assert expected, filter_subject
        chunks = await read_all(own_store, filter_subject, from_seq, batch=50)
        assert all(0 < len(chunk) <= 50 for chunk in chunks)
        assert key([e for chunk in chunks for e in chunk]) == key(expected), (filter_subject, from_seq)
    # Read through the filter (the server filters) rather than the whole stream: the same.
    through = await read_all(own_store, subjects.CUSTOMER_EVENTS_ALL, batch=64, whole_stream=False)
    assert key([e for c in through for e in c]) == key(await own_store.read(subjects.CUSTOMER_EVENTS_ALL))
    # Done reading: nats-py handles every message of the connection itself again.
    assert "_process_msg" not in vars(own_store.nc)


async def test_stops_at_the_end_of_the_log_as_it_was_and_reads_nothing_past_it(own_store: EventStore) -> None:
    await a_log(own_store, 4)
    end = await own_store.last_seq()
    seen: list[StoredEvent] = []
    async for chunk in replay_batches(own_store, subjects.CUSTOMER_EVENTS_ALL, 1, batch=10):
        seen.extend(chunk)
        if len(seen) <= 10:  # appended while the replay runs: not part of it
            await own_store.append(Append(Script(new_id("cu"), new_id("cv")).opened()))
    assert seen and max(e.seq for e in seen) <= end
    assert [e.seq for e in seen] == sorted({e.seq for e in seen})
    assert await read_all(own_store, subjects.CUSTOMER_EVENTS_ALL, await own_store.last_seq() + 1) == []
    assert await read_all(own_store, subjects.customer_filter("cu_nobody")) == []


async def test_flow_control_held_back_loses_and_repeats_nothing(
    own_store: EventStore, monkeypatch: pytest.MonkeyPatch, delivery: str
) -> None:
    await a_log(own_store, 20)
    s = Script(new_id("cu"), new_id("cv"))
    # Some megabytes in flight: the server asks for flow control answers by bytes.
    await own_store.append_many([Append(s.message("x" * 60_000 + str(n))) for n in range(150)])
    await a_log(own_store, 20)
    expected = await own_store.read(subjects.CUSTOMER_EVENTS_ALL)
    original = OrderedReader.take
    held: list[int] = []

    async def take(self: OrderedReader, batch: int) -> list[tuple[int, Any]]:
        # A slow reader (a busy fold): the server's deliveries pile up past the high-water mark
        # while a flow control request waits, however fast this machine is today.
        await asyncio.sleep(0.02)
        if self.withheld is not None:
            held.append(len(self.arrived))
        return await original(self, batch)

    monkeypatch.setattr(OrderedReader, "take", take)
    # A tiny high-water mark: the reader withholds its flow control answers, the server waits.
    chunks = await read_all(own_store, subjects.CUSTOMER_EVENTS_ALL, batch=20, high_water=30)
    assert held, "flow control was never held back"
    assert key([e for c in chunks for e in c]) == key(expected)


async def test_a_gap_in_delivery_is_read_again_not_skipped(
    own_store: EventStore, monkeypatch: pytest.MonkeyPatch, delivery: str
) -> None:
    await a_log(own_store, 20)
    expected = await own_store.read(subjects.CUSTOMER_EVENTS_ALL)
    original = OrderedReader._take_in
    dropped: list[int] = []

    def lossy(self: OrderedReader, cseq: int, sseq: int, *rest: Any) -> None:
        # The client loses one message (as a slow consumer would): the next one shows a gap.
        if self.sseq == 100 and not dropped:
            dropped.append(sseq)
            return
        original(self, cseq, sseq, *rest)

    monkeypatch.setattr(OrderedReader, "_take_in", lossy)
    chunks = await read_all(own_store, subjects.CUSTOMER_EVENTS_ALL, batch=37)
    assert dropped, "the test never dropped a message"
    assert key([e for c in chunks for e in c]) == key(expected)


async def test_an_undecodable_event_is_handed_on_and_quarantined(own_store: EventStore) -> None:
    s = Script(new_id("cu"), new_id("cv"))
    await own_store.append(Append(s.opened()))
    garbage = (await own_store.js.publish(subjects.conversation(s.customer, s.conversation), GARBAGE)).seq
    await own_store.append(Append(s.message()))
    events = [e for c in await read_all(own_store, subjects.customer_filter(s.customer)) for e in c]
    assert [e.seq for e in events][1] == garbage
    assert isinstance(events[1].event, Undecodable)
    parked = [r for r in await ParkingLot(own_store.js).list("quarantined") if r.seq == garbage]
    assert [(r.reader, r.data) for r in parked] == [("replay-test", GARBAGE)]


async def test_the_ceiling_counts_every_customer_event(own_store: EventStore) -> None:
    await a_log(own_store, 10)
    customer_events = len(await own_store.read(subjects.CUSTOMER_EVENTS_ALL))
    assert await replay_discard(own_store, subjects.EVENTS_ALL, count_only="rd.evt.c.") == customer_events
    assert await replay_discard(own_store, subjects.CUSTOMER_EVENTS_ALL) == customer_events
    assert await replay_discard(own_store, subjects.EVENTS_ALL, count_only="rd.evt.c.", client="nats-py") == (
        customer_events
    )


async def test_every_reader_role_may_read_this_way(secured: Secured, tool: NATS) -> None:  # noqa: F811 (fixtures)
    """Under the permissions ``relaydesk up`` generates: the projector (catch-up, stale-store
    rebuild) and the tool (``relaydesk rebuild``) create, follow and delete the consumer and
    answer flow control, with no permission error."""
    writer = EventStore(tool, tool.jetstream())
    await a_log(writer, 3)
    expected = key(await writer.read(subjects.CUSTOMER_EVENTS_ALL))
    for role in ("projector", "tool"):
        async with as_role(secured, role) as (nc, client):
            reader = EventStore(nc, nc.jetstream(), reader=role)
            chunks = await read_all(reader, subjects.CUSTOMER_EVENTS_ALL, batch=10)
            assert key([e for c in chunks for e in c]) == expected, role
            assert client.errors == [], role
    assert secured.violations() == []
