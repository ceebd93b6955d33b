"""A hostile log for the timelines (see tests/unit/router/test_hostile_log.py for the router):
well-typed events that contradict the log before them, mixed with valid lifecycles, written
one at a time into a SQLite store the way the projector writes them (``Applier``: an event
the store refuses is quarantined and the checkpoint moves past it). Every read the API's
GET endpoints make must then answer: each customer's timeline and summary, each
conversation's summary, the lists by status and agent, the resolved ones, the search.

The store folds and writes in one transaction, so an event it refuses leaves nothing behind
(no half-applied state to check): the risk here is rows a later read cannot serve."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import subjects
from events.codec import Undecodable, decode_log_event, encode
from events.model import LogEvent
from events.stored import StoredEvent
from services.timelines import TimelineStore, open_store
from tests.unit.router.helpers import T0
from tests.unit.router.test_hostile_log import AGENTS, CONVERSATIONS, CUSTOMERS, HOSTILE, LOOSE_AGENTS, valid_lifecycle


async def _write(store: TimelineStore, events: list[LogEvent]) -> list[str]:
    refused: list[str] = []
    seq = 0
    for event in events:
        subject = subjects.for_event(event)
        decoded = decode_log_event(encode(event), subject=subject)
        if isinstance(decoded, Undecodable):
            continue  # quarantined by the event store: not what this test is about
        seq += 1
        stored = StoredEvent(seq=seq, subject=subject, event=decoded)
        try:
            await store.apply([stored], expect=seq - 1, through=seq)
        except Exception as err:  # the applier's boundary: quarantined, the checkpoint moves on
            refused.append(f"{type(event).__name__}: {err!r}")
            await store.apply([], expect=seq - 1, through=seq)
    return refused


async def _read_everything(store: TimelineStore) -> None:
    for customer_id in (*CUSTOMERS, "k9"):
        await store.timeline(customer_id)
        await store.timeline(customer_id, channel="chat")
        await store.customer(customer_id)
        await store.conversations(customer_id=customer_id)
    for conversation_id in CONVERSATIONS:
        await store.conversation(conversation_id)
    for status in (None, "waiting", "offered", "assigned", "resolved"):
        await store.conversations(status=status)
    for agent_id in (*LOOSE_AGENTS, *AGENTS):
        await store.conversations(agent_id=agent_id)
        await store.resolved_conversations(agent_id=agent_id)
    await store.resolved_conversations()
    await store.customers(q="sms")
    await store.customers(tier="gold")


async def _run(events: list[LogEvent]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(str(Path(tmp) / "timelines.db"))
        try:
            await _write(store, events)
            await _read_everything(store)
        finally:
            await store.close()  # type: ignore[attr-defined]


OPS = ("valid", "hostile", "hostile", "repeat")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), ops=st.lists(st.sampled_from(OPS), min_size=3, max_size=40))
def test_a_hostile_log_is_written_or_quarantined_and_every_read_still_answers(
    data: st.DataObject, ops: list[str]
) -> None:
    events: list[LogEvent] = []
    for op in ops:
        if op == "valid":
            events.extend(valid_lifecycle(data, T0))
        elif op == "hostile":
            events.append(data.draw(HOSTILE))
        elif events:
            events.append(data.draw(st.sampled_from(events)))  # the same fact again, later
    asyncio.run(_run(events))
