"""The event store against a real nats-server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from events import subjects
from events.model import ConversationOpened, MessageReceived
from events.store import Append, ConcurrencyError, EventStore

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def opened(customer: str, conversation: str) -> ConversationOpened:
    return ConversationOpened(
        at=NOW, customer_id=customer, conversation_id=conversation, channel="sms", contact="+1555"
    )


def received(customer: str, conversation: str, n: int) -> MessageReceived:
    return MessageReceived(
        at=NOW,
        customer_id=customer,
        conversation_id=conversation,
        channel="sms",
        message_id=f"m{n}",
        provider_message_id=f"SM{n}",
        text=f"message {n}",
    )


async def test_append_with_expected_sequence_and_read_back(store: EventStore, uid: str) -> None:
    cust, conv = f"cu{uid}", f"cv{uid}"
    s1 = await store.append(Append(opened(cust, conv), expected=0))
    s2 = await store.append(Append(received(cust, conv, 1), expected=s1))
    events = await store.read_customer(cust)
    assert [e.seq for e in events] == [s1, s2]
    assert isinstance(events[1].event, MessageReceived)
    assert events[1].event.text == "message 1"


async def test_stale_expected_sequence_is_a_concurrency_error(store: EventStore, uid: str) -> None:
    cust, conv = f"cu{uid}", f"cv{uid}"
    s1 = await store.append(Append(opened(cust, conv), expected=0))
    await store.append(Append(received(cust, conv, 1), expected=s1))
    with pytest.raises(ConcurrencyError):
        await store.append(Append(received(cust, conv, 2), expected=s1))
    assert len(await store.read_customer(cust)) == 2


async def test_retry_of_a_stored_append_succeeds_once(store: EventStore, uid: str) -> None:
    cust, conv = f"cu{uid}", f"cv{uid}"
    item = Append(opened(cust, conv), expected=0)
    first = await store.append(item)
    again = await store.append(item)  # e.g. the ack was lost and the caller retries
    assert again == first
    assert len(await store.read_customer(cust)) == 1


async def test_pipelined_appends_guard_each_subject(store: EventStore, uid: str) -> None:
    items = [Append(opened(f"cu{uid}", f"cv{uid}{i}"), expected=0) for i in range(50)]
    results = await store.append_many(items)
    assert all(isinstance(r, int) for r in results)
    again = await store.append_many([Append(opened(f"cu{uid}", f"cv{uid}0"), expected=0)])
    assert isinstance(again[0], ConcurrencyError)


async def test_unknown_event_type_does_not_break_readers(store: EventStore, nc, uid: str) -> None:  # type: ignore[no-untyped-def]
    cust, conv = f"cu{uid}", f"cv{uid}"
    await store.append(Append(opened(cust, conv), expected=0))
    await nc.jetstream().publish(
        subjects.conversation(cust, conv), b'{"type":"sentiment_scored","at":"2026-11-23T12:00:00Z","score":0.4}'
    )
    events = await store.read_customer(cust)
    assert [type(e.event).__name__ for e in events] == ["ConversationOpened", "UnknownEvent"]


async def test_replay_reads_in_batches_to_the_end(store: EventStore, uid: str) -> None:
    cust = f"cu{uid}"
    await store.append_many([Append(opened(cust, f"cv{i}"), expected=0) for i in range(25)])
    batches = [b async for b in store.replay(subjects.customer_filter(cust), batch=10)]
    assert [len(b) for b in batches] == [10, 10, 5]
    assert await store.read_customer(f"nobody{uid}") == []


async def test_reading_a_customer_with_no_events_returns_at_once_amid_other_appends(
    store: EventStore, uid: str
) -> None:
    # A filtered consumer moves its delivered stream sequence past messages that do not
    # match; an empty read must still end at once rather than wait for a timeout.
    async def noise() -> None:
        for i in range(40):
            await store.append(Append(opened(f"other{uid}", f"cv{i}"), expected=0))

    writer = asyncio.create_task(noise())
    reads = await asyncio.wait_for(asyncio.gather(*(store.read_customer(f"new{uid}{i}") for i in range(40))), 3.0)
    await writer
    assert reads == [[] for _ in range(40)]


async def test_many_reads_in_a_row_leave_no_consumers_behind(store: EventStore, uid: str) -> None:
    # Each read uses a consumer; the server caps how many exist at once (about 1,000), so
    # reads must clean up after themselves or a busy intake starts failing.
    await store.append(Append(opened(f"cu{uid}", f"cv{uid}"), expected=0))
    gate = asyncio.Semaphore(16)

    async def read_one(i: int) -> int:
        async with gate:
            return len(await store.read_customer(f"cu{uid}" if i % 2 else f"none{uid}{i}"))

    counts = await asyncio.gather(*(read_one(i) for i in range(1200)))
    assert counts.count(1) == 600
    info = await store.js.stream_info("RD_EVENTS")
    assert info.state.consumer_count < 50


async def test_a_tail_read_slowly_pauses_and_still_hands_on_every_event_once_in_order(
    store: EventStore, uid: str
) -> None:
    """A reader slower than the log (a cold start on a long log) no longer holds the whole log
    in memory: the tail stops its consumer past ``pause_at`` events waiting and starts a new
    one after the last it queued. Across every pause, nothing is lost, doubled or reordered."""
    cust = f"cu{uid}"
    seqs = await store.append_many([Append(received(cust, f"cv{uid}-{n % 7}", n)) for n in range(6_000)])
    assert all(isinstance(s, int) for s in seqs)
    tail = await store.tail(subjects.customer_filter(cust), 1)
    tail.pause_at, tail.resume_at = 300, 100
    got: list[int] = []
    most_waiting = 0
    try:
        while len(got) < len(seqs):
            most_waiting = max(most_waiting, tail.queue.qsize())
            batch = tail.drain(limit=50)
            if not batch:
                assert await tail.wait(timeout=10), f"stalled after {len(got)} events"
                continue
            got += [stored.seq for stored in batch]
            await asyncio.sleep(0)  # a slow reader: the log arrives faster than this
    finally:
        await tail.close()
    assert got == seqs
    assert tail.pauses >= 3
    assert most_waiting < len(seqs) / 2  # bounded: it did not queue the whole log


async def test_a_tail_whose_reader_takes_everything_at_once_does_not_stall_after_a_pause(
    store: EventStore, uid: str
) -> None:
    """The reader may take every queued event while the paused consumer is still stopping:
    the tail then goes on by itself (the reader, waiting for an event, asks nothing more)."""
    cust = f"cu{uid}"
    seqs = await store.append_many([Append(received(cust, f"cv{uid}", n)) for n in range(4_000)])
    tail = await store.tail(subjects.customer_filter(cust), 1)
    tail.pause_at, tail.resume_at = 20, 5
    got: list[int] = []
    try:
        while len(got) < len(seqs):
            if not await tail.wait(timeout=10):
                raise AssertionError(f"stalled after {len(got)} events, {tail.pauses} pauses")
            got += [stored.seq for stored in tail.drain()]
    finally:
        await tail.close()
    assert got == seqs and tail.pauses >= 3
