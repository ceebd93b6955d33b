"""``EventStore.read_direct``: a customer's history by batched direct gets, no consumer created."""

from __future__ import annotations

from datetime import UTC, datetime

from events import subjects
from events.model import CustomerCreated, CustomerProfileUpdated
from events.store import Append, EventStore


async def test_read_direct_matches_read_and_creates_no_consumer(store: EventStore, uid: str) -> None:
    customer, other = f"cu_{uid}", f"cu_{uid}x"
    now = datetime.now(UTC)
    await store.append(Append(CustomerCreated(at=now, customer_id=customer, identity=f"sms:+1{uid}")))
    for n in range(1, 1101):  # more than two batches of 500
        who = customer if n % 3 else other  # interleaved with another customer's events
        await store.append(Append(CustomerProfileUpdated(at=now, customer_id=who, preferred_language=f"l{n}")))
    info = await store.js.stream_info(subjects.EVENTS_STREAM)
    consumers_before = info.state.consumer_count

    direct = await store.read_customer_direct(customer)
    assert len(direct) == 1 + len([n for n in range(1, 1101) if n % 3])
    assert [(s.seq, s.subject, s.event) for s in direct] == [
        (s.seq, s.subject, s.event) for s in await store.read_customer(customer)
    ]
    assert [s.seq for s in direct] == sorted(s.seq for s in direct)
    assert await store.read_customer_direct(f"cu_{uid}_nobody") == []
    # From a sequence on: only what comes after it.
    later = await store.read_direct(subjects.customer_filter(customer), from_seq=direct[-5].seq)
    assert [s.seq for s in later] == [s.seq for s in direct[-5:]]

    info = await store.js.stream_info(subjects.EVENTS_STREAM)
    assert info.state.consumer_count == consumers_before
