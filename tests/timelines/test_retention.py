"""``[retention] message_days`` in the timelines: once a message is past retention its text is
gone from the timelines store too (SQLite and PostgreSQL), not only from the log. Before, the
day keys were erased and the log read ``[expired]``, but the projector's copy kept every word
for ever and the API served it on the customer's timeline."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.metrics import RETENTION_EXPIRED, RETENTION_SWEEPS
from services.retention import cutoff_instant, expire_timelines, run_timelines_retention
from services.timelines import TimelineStore, open_store
from services.timelines.redact import ERASED, EXPIRED
from tests.integration.system import eventually
from tests.timelines.helpers import Backend, Script, Seq

OLD_TEXT = "my card ending 4242 was charged twice"
OLD_REPLY = "refunded the second charge to 4242"
OLD_NOTE = "customer sounds upset, VIP"
NEW_TEXT = "and my new address is 12 Elm Street"
OLD = datetime(2026, 1, 9, 23, 59, tzinfo=UTC)  # the last minute of its UTC day
NEW = datetime(2026, 2, 9, 0, 0, tzinfo=UTC)  # 31 days on, the first minute of its day


def history(seq: Seq) -> list[object]:
    from events.model import NoteAdded

    old = Script("cu_ann", "cv_old", clock=OLD - timedelta(seconds=10))
    new = Script("cu_ann", "cv_new", clock=NEW)
    events = [
        old.created(),
        old.opened(),
        old.message(OLD_TEXT),
        old.reply("ava", OLD_REPLY),
        NoteAdded(at=OLD, customer_id="cu_ann", conversation_id="cv_old", note_id="n1", agent_id="ava", text=OLD_NOTE),
        old.sent("r2"),
        old.message(""),  # an empty body (a picture alone) stays empty
        new.opened(),
        new.message(NEW_TEXT),
    ]
    return seq(events)  # type: ignore[arg-type]


def texts(entries: list[object]) -> dict[str, str | None]:
    return {f"{e.conversation_id}:{e.kind}:{e.message_id}": e.text for e in entries}  # type: ignore[attr-defined]


async def test_bodies_past_retention_read_expired_and_the_rest_stays(backend: Backend) -> None:
    store = await backend.open()
    seq = Seq()
    await store.apply(history(seq))  # type: ignore[arg-type]
    before = await store.timeline("cu_ann", limit=100)
    summary = await store.conversation("cv_old")

    # 30 days kept, on NEW's day: OLD's day (31 days back) is past retention, NEW's is not.
    assert await expire_timelines(store, 30, NEW.date()) == 3
    after = await store.timeline("cu_ann", limit=100)
    assert texts(after) == {
        **texts(before),
        "cv_old:message_in:m1": EXPIRED,
        "cv_old:message_out:r2": EXPIRED,
        "cv_old:note:n1": EXPIRED,
    }
    assert texts(after)["cv_new:message_in:m1"] == NEW_TEXT
    assert texts(after)["cv_old:message_in:m3"] == ""
    # Rows, times, kinds and counts stay: reports keep their figures.
    assert [(e.seq, e.kind, e.at) for e in after] == [(e.seq, e.kind, e.at) for e in before]
    assert await store.conversation("cv_old") == summary
    assert await expire_timelines(store, 30, NEW.date()) == 0  # again: nothing left to do


async def test_an_erased_text_stays_erased(backend: Backend) -> None:
    from events.model import CustomerErased

    store = await backend.open()
    seq = Seq()
    await store.apply(history(seq))  # type: ignore[arg-type]
    await store.apply(seq([CustomerErased(at=NEW, customer_id="cu_ann", reason="DSR-1", actor="operator")]))
    assert await expire_timelines(store, 1, NEW.date() + timedelta(days=5)) == 0
    assert {e.text for e in await store.timeline("cu_ann", limit=100) if e.text} == {ERASED}


async def test_the_projector_sweep_expires_text_once_its_day_passes(tmp_path: Path) -> None:
    """The sweep the projector runs, with its clock moved: nothing expires while the day is kept;
    the check after the cutoff moved past it expires the text, and the SQLite files hold none of it."""
    path = tmp_path / "timelines.db"
    store: TimelineStore = await open_store(str(path))
    now = [OLD + timedelta(days=30)]  # OLD's day is still kept (the 30th day back)
    stop = asyncio.Event()
    ok = RETENTION_SWEEPS.labels(what="timelines", outcome="ok")
    expired = RETENTION_EXPIRED.labels(what="timelines")
    sweeps_before, expired_before = ok._value.get(), expired._value.get()
    try:
        await store.apply(history(Seq()))  # type: ignore[arg-type]
        task = asyncio.create_task(run_timelines_retention(store, 30, stop, clock=lambda: now[0], every=0.01))

        async def swept() -> bool:
            return ok._value.get() > sweeps_before

        await eventually(swept)
        assert OLD_TEXT in texts(await store.timeline("cu_ann", limit=100)).values()

        now[0] = NEW  # a day later
        entries: list[object] = []

        async def expired_now() -> bool:
            entries[:] = await store.timeline("cu_ann", limit=100)
            return texts(entries)["cv_old:message_in:m1"] == EXPIRED

        await eventually(expired_now)
        assert OLD_REPLY not in texts(entries).values() and OLD_NOTE not in texts(entries).values()
        assert expired._value.get() - expired_before == 3
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        stop.set()
        await store.close()
    assert holding(tmp_path, OLD_TEXT, OLD_REPLY, OLD_NOTE) == []
    assert holding(tmp_path, NEW_TEXT) == [("timelines.db", NEW_TEXT)]  # the scan can find what is there


def holding(directory: Path, *secrets: str) -> list[tuple[str, str]]:
    """(file, secret) for every file of ``directory`` that holds a secret's bytes."""
    return [
        (file.name, secret)
        for file in sorted(directory.iterdir())
        for secret in secrets
        if secret.encode() in file.read_bytes()
    ]


def test_a_body_is_kept_through_the_whole_of_its_utc_day() -> None:
    assert cutoff_instant(30, NEW.date()) == datetime(2026, 1, 10, tzinfo=UTC)  # OLD's day is past
    assert cutoff_instant(30, NEW.date() - timedelta(days=1)) == datetime(2026, 1, 9, tzinfo=UTC)  # kept
