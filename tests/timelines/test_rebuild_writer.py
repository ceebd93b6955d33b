"""The whole-store rebuild's writer process (``services.timelines.bulk``): it reads in one
process and folds and writes in another, and must give exactly the rows the live projector
gives, over many batches in flight; a writer that dies or an event the store refuses must
leave things as the in-process rebuild would."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from events.parking import ParkingLot
from events.store import EventStore
from services.projector import Projector
from services.rebuild import rebuild_timelines
from services.timelines.bulk_parent import BulkWriter, WriterFailed
from tests.timelines.helpers import Backend, Script, make_backend, new_id
from tests.timelines.test_rebuild import append_all, live_projection, traffic

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
async def backends(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Backend]]:
    made: list[Backend] = []
    for name in ("live", "process", "inline"):
        (tmp_path / name).mkdir()
        made.append(make_backend(str(request.param), tmp_path / name))
    try:
        yield made
    finally:
        for b in made:
            await b.close_all()


async def test_many_batches_in_flight_give_the_live_rows_in_either_writer(
    own_store: EventStore, backends: list[Backend]
) -> None:
    live_b, process_b, inline_b = backends
    live = await live_b.open()
    events, _ = traffic(8)
    await live_projection(own_store, live, events)
    want = await live.dump()
    checkpoint = await live.checkpoint()
    for b, writer in ((process_b, "process"), (inline_b, "inline")):
        # Batches of 7: dozens of them, two on their way to the writer at any time.
        result = await rebuild_timelines(
            own_store, b.target, schema=b.schema, progress=False, batch_size=7, writer=writer
        )
        assert result.swapped and result.checkpoint == checkpoint, writer
        assert result.events == len(await own_store.read("rd.evt.c.>")), writer
        rebuilt = await b.open()
        assert await rebuilt.dump() == want, writer
        assert await rebuilt.checkpoints() == {"all": checkpoint}, writer


async def test_a_writer_that_dies_leaves_the_live_copy_serving_and_a_new_rebuild_works(
    own_store: EventStore, backends: list[Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    live_b = backends[0]
    events, _ = traffic(4)
    await append_all(own_store, events)
    first = await rebuild_timelines(own_store, live_b.target, schema=live_b.schema, progress=False)
    live = await live_b.open(readonly=True)
    before = await live.dump()
    await append_all(own_store, [Script(new_id("cu"), new_id("cv")).opened()])

    original = BulkWriter.send
    sent: list[int] = []

    async def dies_after_one_batch(self: BulkWriter, store: EventStore, arrived: Any) -> None:
        if sent:
            self.process.kill()  # as the OOM killer would
            await self.process.wait()
        sent.append(len(arrived))
        await original(self, store, arrived)

    monkeypatch.setattr(BulkWriter, "send", dies_after_one_batch)
    with pytest.raises(WriterFailed, match="writer process"):
        await rebuild_timelines(own_store, live_b.target, schema=live_b.schema, progress=False, batch_size=5)
    assert await live.dump() == before  # nothing swapped in
    assert await live.checkpoint() == first.checkpoint

    monkeypatch.undo()
    again = await rebuild_timelines(own_store, live_b.target, schema=live_b.schema, progress=False, batch_size=5)
    assert again.checkpoint == await own_store.last_seq()
    assert len((await live.dump())["conversations"]) == len(before["conversations"]) + 1


async def test_an_event_the_store_refuses_is_quarantined_and_the_rest_is_rebuilt(
    own_store: EventStore, tmp_path: Path
) -> None:
    pg = make_backend("postgres", tmp_path)  # skips, saying why, without PostgreSQL
    try:
        s = Script(new_id("cu"), new_id("cv"))
        # PostgreSQL text cannot hold a NUL: the live projector quarantines such an event, and
        # so must the rebuild (its writer process reports it, the reader parks it). A customer's
        # words with one are stored with U+FFFD instead; an id with one (which intake never
        # makes) is still refused.
        refusable = msgspec.structs.replace(s.message("bad"), message_id="m-bad\x00id")
        await append_all(own_store, [s.opened(), s.message("fine"), refusable, s.message("after")])
        refused = await own_store.last_seq() - 1
        result = await rebuild_timelines(own_store, pg.target, schema=pg.schema, progress=False)
        assert result.checkpoint == await own_store.last_seq()
        store = await pg.open(readonly=True)
        texts = [e.text for e in await store.timeline(s.customer) if e.kind == "message_in"]
        assert texts == ["fine", "after"]
        parked = await asyncio.wait_for(ParkingLot(own_store.js).list("quarantined"), 10)
        assert [(r.reader, r.seq) for r in parked] == [("rebuild", refused)]
    finally:
        await pg.close_all()


async def test_appends_meanwhile_are_caught_up_before_the_swap(
    own_store: EventStore, backends: list[Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    live_b = backends[0]
    events, _ = traffic(4)
    await append_all(own_store, events)
    late = Script(new_id("cu"), new_id("cv"))
    original = BulkWriter.send
    appended: list[bool] = []

    async def append_while_reading(self: BulkWriter, store: EventStore, arrived: Any) -> None:
        if not appended:  # the first pass reads to the end of the log as it was: these come after
            appended.append(True)
            await append_all(own_store, [late.opened(), late.message("late")])
        await original(self, store, arrived)

    monkeypatch.setattr(BulkWriter, "send", append_while_reading)
    result = await rebuild_timelines(own_store, live_b.target, schema=live_b.schema, progress=False, batch_size=10)
    assert result.checkpoint == await own_store.last_seq()
    store = await live_b.open(readonly=True)
    assert [e.text for e in await store.timeline(late.customer) if e.kind == "message_in"] == ["late"]


async def test_undecodable_events_are_quarantined_and_skipped_as_by_the_live_projector(
    own_store: EventStore, backends: list[Backend]
) -> None:
    live_b, process_b, _ = backends
    s = Script(new_id("cu"), new_id("cv"))
    subject = f"rd.evt.c.{s.customer}.{s.conversation}"
    await append_all(own_store, [s.opened(), s.message("before")])
    # No tag at all (the reader decodes it), and a tag of an event with nothing to open whose
    # fields do not validate (it crosses the pipe as stored: the writer process decodes it).
    garbage = (await own_store.js.publish(subject, b"\x00 not JSON")).seq
    bad_fields = (await own_store.js.publish(subject, b'{"type":"message_sent","at":"never"}')).seq
    await append_all(own_store, [s.message("after")])
    result = await rebuild_timelines(own_store, process_b.target, schema=process_b.schema, progress=False)
    assert result.checkpoint == await own_store.last_seq()
    # Parked once per message, by the first reader to meet it: here the rebuild.
    parked = await ParkingLot(own_store.js).list("quarantined")
    assert [(r.reader, r.seq) for r in parked] == [("rebuild", garbage), ("rebuild", bad_fields)]
    live = await live_b.open()
    await Projector(own_store, live).catch_up()
    rebuilt = await process_b.open(readonly=True)
    assert await rebuilt.dump() == await live.dump()
    assert [e.text for e in await rebuilt.timeline(s.customer) if e.kind == "message_in"] == ["before", "after"]


def test_the_writer_process_starts_without_nats_or_the_service_stack() -> None:
    """Issue 10: no service stack imports on the rebuild path (nats-py and aiohttp alone took
    0.3 s of the writer's start, its SSL context set-up included)."""
    code = (
        "import sys, services.timelines.bulk; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {'nats', 'aiohttp'} "
        "or m in {'services.projector', 'events.store', 'services.config'})))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []
