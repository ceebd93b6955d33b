"""Poison on the log, over a real nats-server: a message on ``RD_EVENTS`` that does not
decode, or that a fold cannot apply, is quarantined (logged once, counted, parked in
``rd_parked`` once) and skipped by every reader; nothing stops, and everything after it is
processed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from events import subjects
from events.codec import Undecodable
from events.model import AgentStatusChanged, MessageReceived
from events.parking import ParkedMessage, ParkingLot, parked_key
from events.quarantine import QUARANTINED
from events.store import Append, EventStore, StoredEvent
from events.streams import ensure_streams
from router import snapshot
from services.api.readmodel import LiveState
from services.bus.embedded import EmbeddedNats
from services.delivery.settings import Endpoint
from services.projector import Projector
from services.rebuild import rebuild_command
from services.router_runner import SNAPSHOT_NAME, RouterRunner
from services.timelines import TimelineStore
from tests.integration.system import (
    System,
    accept_if_offered,
    eventually,
    open_conversation,
    running_system,
    system_config,
)
from tests.timelines.helpers import T0, Script, make_backend, new_id

pytestmark = pytest.mark.integration

GARBAGE = b"\x00\xff this is not JSON {"
BAD_FIELDS = b'{"type":"message_received","at":"2026-11-23T12:00:00Z","customer_id":42,"text":"x"}'


def counted(reader: str, stream: str = subjects.EVENTS_STREAM) -> float:
    return QUARANTINED.labels(reader=reader, stream=stream)._value.get()


async def parked(js: Any, seq: int) -> ParkedMessage | None:
    return await ParkingLot(js).get(parked_key(subjects.EVENTS_STREAM, seq))


# -- the store ------------------------------------------------------------------------------


async def test_a_read_skips_poison_parks_it_once_and_reads_on(store: EventStore, nc: NATS, uid: str) -> None:
    cust, conv = f"cu{uid}", f"cv{uid}"
    js = nc.jetstream()
    await open_conversation(store, cust, conv)
    garbage = (await js.publish(subjects.conversation(cust, conv), GARBAGE)).seq
    bad = (await js.publish(subjects.customer_scope(cust), BAD_FIELDS)).seq
    after = await store.append(Append(AgentStatusChanged(at=T0, agent_id=f"ag{uid}", status="away")))
    good = await store.append(
        Append(
            MessageReceived(
                at=T0,
                customer_id=cust,
                conversation_id=conv,
                channel="sms",
                message_id="m2",
                provider_message_id="SM2",
                text="still here",
            )
        )
    )
    assert after < good

    before = counted("poison-test")
    reader = store.for_reader("poison-test")
    events = await reader.read_customer(cust)
    assert [e.seq for e in events][-3:] == [garbage, bad, good]
    marks = {e.seq: e.event for e in events if isinstance(e.event, Undecodable)}
    assert set(marks) == {garbage, bad}
    assert marks[bad].type == "message_received" and marks[bad].customer_id == cust
    assert isinstance(events[-1].event, MessageReceived)
    assert counted("poison-test") == before + 2

    # Read again, by this reader and another: logged and counted once per reader, parked once.
    await reader.read_customer(cust)
    await store.for_reader("poison-test-2").read_customer(cust)
    assert counted("poison-test") == before + 2
    for seq, data, subject in (
        (garbage, GARBAGE, subjects.conversation(cust, conv)),
        (bad, BAD_FIELDS, subjects.customer_scope(cust)),
    ):
        record = await parked(js, seq)
        assert record is not None
        assert (record.kind, record.reader, record.subject, record.data) == (
            "quarantined",
            "poison-test",
            subject,
            data,
        )
        assert "cannot decode" in record.error
    mine = [r for r in await ParkingLot(js).list("quarantined") if r.subject.startswith(f"rd.evt.c.{cust}.")]
    assert sorted(r.seq for r in mine) == [garbage, bad]

    # An operator dropped one (junk, or fixed forward): readers meeting it again, in a fresh
    # process even, skip it without parking it again.
    assert await ParkingLot(js).drop(parked_key(subjects.EVENTS_STREAM, garbage))
    await EventStore(nc, js, reader="poison-test-3").read_customer(cust)
    assert await parked(js, garbage) is None
    assert await parked(js, bad) is not None


async def test_a_live_tail_hands_on_poison_as_a_marker_and_parks_it(store: EventStore, nc: NATS, uid: str) -> None:
    js = nc.jetstream()
    start = await store.last_seq() + 1
    tail = await store.for_reader("poison-tail").tail(subjects.customer_filter(f"cu{uid}"), start)
    try:
        seq = (await js.publish(subjects.customer_scope(f"cu{uid}"), GARBAGE)).seq
        await open_conversation(store, f"cu{uid}", f"cv{uid}")
        got = [await tail.next(timeout=5) for _ in range(4)]
    finally:
        await tail.close()
    assert all(g is not None for g in got), got
    first, *rest = [g for g in got if g is not None]
    assert first.seq == seq and isinstance(first.event, Undecodable)
    assert [type(g.event).__name__ for g in rest] == ["ConversationOpened", "MessageReceived", "RoutingRequested"]
    record = await eventually(lambda: parked(js, seq))
    assert record.reader == "poison-tail"


# -- readers that cannot apply --------------------------------------------------------------


async def test_the_api_view_quarantines_an_event_its_fold_cannot_apply(
    clean_nats: EmbeddedNats, tmp_path: Path
) -> None:
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        store = EventStore(nc, js)
        await open_conversation(store, "cu1", "cv1")
        poisoned = await store.last_seq()  # the RoutingRequested: this fold chokes on it

        def choking(stored: StoredEvent) -> None:
            if stored.seq in (poisoned, poisoned + 2):
                raise KeyError("the fold cannot take this one")

        live = LiveState(store)
        live.add_fold(choking)
        before = counted("api")
        await live.start()
        try:
            assert live.position == poisoned
            assert "cv1" in live.state.conversations  # the router fold applied it all the same
            record = await eventually(lambda: parked(js, poisoned))
            assert record.reader == "api" and record.error.startswith("cannot apply: KeyError")
            # And live: one more bad one, then good ones after it.
            await open_conversation(store, "cu2", "cv2")
            end = await store.last_seq()
            assert await live.wait_for(end)
            assert "cv2" in live.state.conversations
            await eventually(lambda: parked(js, poisoned + 2))
            assert counted("api") == before + 2
        finally:
            await live.stop()
    finally:
        await nc.drain()


class Refusing:
    """A timeline store that cannot write one event (as PostgreSQL refuses a NUL in text),
    or is away altogether."""

    def __init__(self, inner: TimelineStore, refuse: int) -> None:
        self.inner = inner
        self.refuse = refuse
        self.away = False

    async def apply(self, batch: Sequence[StoredEvent], **kwargs: Any) -> None:
        if self.away or any(e.seq == self.refuse for e in batch):
            raise ValueError("A string literal cannot contain NUL (0x00) characters.")
        await self.inner.apply(batch, **kwargs)

    async def checkpoint(self, key: str = "") -> int:
        if self.away:
            raise ConnectionError("the database is away")
        return await (self.inner.checkpoint(key) if key else self.inner.checkpoint())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def refused_batches() -> float:
    return REGISTRY.get_sample_value("relaydesk_skipped_total", {"where": "projector.batch_apply"}) or 0.0


async def test_the_projector_quarantines_an_event_the_store_refuses_and_moves_past_it(
    store: EventStore, nc: NATS, tmp_path: Path
) -> None:
    backend = make_backend("sqlite", tmp_path)
    try:
        timelines = await backend.open()
        s = Script(new_id("cu"), new_id("cv"))
        seqs = [await store.append(Append(ev)) for ev in (s.opened(), s.message("one"), s.message("two"))]
        refusing = Refusing(timelines, refuse=seqs[1])
        projector = Projector(store, refusing, batch_size=50, filter_subject=subjects.customer_filter(s.customer))  # type: ignore[arg-type]

        refusing.away = True  # a store that is away is never a reason to skip anything
        with pytest.raises(ConnectionError):
            await projector.catch_up()
        assert await timelines.checkpoint() == 0
        assert await parked(nc.jetstream(), seqs[1]) is None

        refusing.away = False
        refused_before = refused_batches()
        assert await projector.catch_up() == seqs[2]
        assert refused_batches() == refused_before + 1  # the batch holding it, counted in /metrics
        kinds = [(e.seq, e.kind) for e in await timelines.timeline(s.customer)]
        assert [seq for seq, _ in kinds] == [seqs[0], seqs[2]]
        record = await parked(nc.jetstream(), seqs[1])
        assert record is not None and record.reader == "projector" and "NUL" in record.error
        assert record.data == (await nc.jetstream().get_msg(subjects.EVENTS_STREAM, seqs[1])).data  # as stored
    finally:
        await backend.close_all()


async def test_an_unreadable_router_snapshot_is_ignored_and_the_log_replayed(clean_nats: EmbeddedNats) -> None:
    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        store = EventStore(nc, js)
        await open_conversation(store, "cu1", "cv1")
        obs = await js.object_store(subjects.SNAPSHOT_BUCKET)
        await obs.put(SNAPSHOT_NAME, b"\x93 not a snapshot")
        before = counted("router", subjects.SNAPSHOT_BUCKET)
        from router.policy import RouterPolicy

        runner = RouterRunner(nc, RouterPolicy(), lease_ttl=1.0, tick=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await asyncio.wait_for(runner.ready.wait(), 10)
            assert "cv1" in runner.state.conversations
            assert counted("router", subjects.SNAPSHOT_BUCKET) == before + 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        assert snapshot.load((await obs.get(SNAPSHOT_NAME)).data or b"").last_seq >= 3  # a fresh one replaced it
    finally:
        await nc.drain()


# -- the whole system -----------------------------------------------------------------------


async def new_conversation(system: System, customer_id: str, not_this: str) -> dict[str, Any] | None:
    conv = await system.conversation_of(customer_id)
    return conv if conv is not None and conv["id"] != not_this else None


async def test_poison_on_a_customers_subjects_stops_nothing_and_blocks_no_one(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    # A delivery endpoint, so that delivery reads the log too (for an agent who never gets offers).
    hook = Endpoint(kind="webhook", id="nobody-hook", agent="nobody", url="http://127.0.0.1:9/", secret="s")
    config.delivery = msgspec.structs.replace(config.delivery, endpoints=(hook,))
    phone = "+15551239001"
    readers = ("router", "api", "projector", "intake", "delivery", "reports")
    before = {reader: counted(reader) for reader in readers}
    nc = await nats.connect(clean_nats.url)
    js = nc.jetstream()
    try:
        async with running_system(config, clean_nats) as system:
            assert await system.send_sms("SM" + "1" * 32, phone, "my invoice is wrong") == 200
            customer = await eventually(lambda: system.customer(phone))
            first = await accept_if_offered(system, await eventually(lambda: system.conversation_of(customer)))
            status, body = await system.post(f"/v1/conversations/{first['id']}/resolve", {})
            assert status == 200, body

            # Poison as the last messages on the customer's subjects: garbage on the conversation,
            # on the customer's own subject a valid event naming another customer (an audit: the
            # router and timelines took it for the other, and intake's customer guard conflicted
            # until the customer's messages were dead letters).
            garbage = (await js.publish(subjects.conversation(customer, first["id"]), GARBAGE)).seq
            elsewhere = b'{"type":"customer_profile_updated","at":"2026-11-23T12:00:00Z","customer_id":"cu_typo"}'
            bad = (await js.publish(subjects.customer_scope(customer), elsewhere)).seq

            # The customer's next SMS is recorded and routed all the same.
            assert await system.send_sms("SM" + "2" * 32, phone, "another invoice question") == 200
            second = await eventually(lambda: new_conversation(system, customer, first["id"]), timeout=30)
            assert second["status"] in ("offered", "assigned")

            async def on_timeline() -> bool:
                status, body = await system.get(f"/v1/customers/{customer}/timeline")
                return status == 200 and "another invoice question" in [e.get("text") for e in body["entries"]]

            await eventually(on_timeline)

            # Poison on the open conversation: a resolve whose time has no offset (an audit: it
            # crashed delivery and the router's decide on every restart, and `up` with them).
            # Commands on it still go through (the views count its sequence, so a command's
            # expected sequence is not stale for good).
            naive = (
                f'{{"type":"conversation_resolved","at":"2026-12-07T00:05:00","customer_id":"{customer}",'
                f'"conversation_id":"{second["id"]}"}}'
            ).encode()
            on_open = (await js.publish(subjects.conversation(customer, second["id"]), naive)).seq

            async def accepted_and_resolved() -> bool:
                for action in ("accept", "resolve") if second["status"] == "offered" else ("resolve",):
                    status, body = await system.post(f"/v1/conversations/{second['id']}/{action}", {})
                    if status == 409 and "changed meanwhile" in body.get("error", ""):
                        return False  # the view has not seen the poison yet: again
                    assert status == 200, (action, body)
                    second["status"] = body["conversation"]["status"]
                return True

            await eventually(accepted_and_resolved)
            status, body = await system.get("/v1/reports/service")
            assert status == 200, body

            async def every_reader_skipped_them() -> bool:
                # Intake reads the customer's history only when the customer writes: two.
                return all(counted(r) == before[r] + (2 if r == "intake" else 3) for r in readers)

            await eventually(every_reader_skipped_them, timeout=10)
        # Stopped cleanly (running_system checks every service's exit), and it starts again.
        async with running_system(config, clean_nats) as system:

            async def resolved() -> bool:
                status, body = await system.get(f"/v1/conversations/{second['id']}")
                return status == 200 and body["status"] == "resolved"

            await eventually(resolved)
            assert await system.send_sms("SM" + "3" * 32, phone, "one more thing about my invoice") == 200
            await eventually(lambda: new_conversation(system, customer, second["id"]), timeout=30)
        assert await rebuild_command(clean_nats.url, config.projection_target, None) == 0

        records = [r for r in await ParkingLot(js).list() if r.subject.startswith(f"rd.evt.c.{customer}.")]
        assert sorted((r.seq, r.kind) for r in records) == [(s, "quarantined") for s in (garbage, bad, on_open)]
    finally:
        await nc.drain()
