"""The erasure register (``TimelineStore.erasures``), one abstract case per backend like
``test_store_contract.py``: every ``CustomerErased`` folded is recorded (ids, time, sequence,
reason; nothing personal), in the batch's transaction, and no rebuild clears it: a shadow copy
swapped in (``relaydesk rebuild``, the projector's ``store_of_another_log`` rebuild) and a
one-customer rebuild keep what the live copy registered, also when the log they fold no
longer holds the erasure (NATS restored from an older backup)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from events.model import CustomerErased
from events.store import StoredEvent
from services.timelines import TimelineStore
from services.timelines.rows import ErasureRecord
from tests.timelines.helpers import T0, Backend, Script, Seq, make_backend


def erased(customer_id: str, reason: str = "DSR-42", merged: tuple[str, ...] = ()) -> CustomerErased:
    return CustomerErased(
        at=T0 + timedelta(hours=1), customer_id=customer_id, reason=reason, actor="cli", merged_ids=merged
    )


def before_erasure(seq: Seq) -> list[StoredEvent]:
    """Ann (with Ann2 merged into her) and Bob, with messages: what a backup taken before holds."""
    ann, ann2, bob = Script("cu_ann", "cv_a1", channel="email"), Script("cu_ann2", "cv_a2"), Script("cu_bob", "cv_b1")
    return seq(
        [
            ann.created(),
            ann.opened(),
            ann.message("my address is 12 Elm Street"),
            ann2.created(),
            ann2.opened(),
            ann2.message("hello"),
            bob.created(),
            bob.opened(),
            bob.message("bob's words"),
        ]
    )


class RegisterContract:
    """Subclasses set ``backend_name``; pytest collects only the ``Test*`` subclasses."""

    backend_name: str

    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[Backend]:
        b = make_backend(self.backend_name, tmp_path)
        try:
            yield b
        finally:
            await b.close_all()

    @pytest.fixture
    async def ts(self, backend: Backend) -> TimelineStore:
        return await backend.open()

    async def test_a_folded_erasure_is_registered_without_personal_data(self, ts: TimelineStore) -> None:
        seq = Seq()
        await ts.apply(before_erasure(seq))
        assert await ts.erasures() == []
        [erasure] = seq([erased("cu_ann", merged=("cu_ann2",))])
        await ts.apply([erasure])
        assert await ts.erasures() == [
            ErasureRecord(
                customer_id="cu_ann",
                seq=erasure.seq,
                at=T0 + timedelta(hours=1),
                reason="DSR-42",
                merged_ids=["cu_ann2"],
            )
        ]
        # Applied again (a replay below the checkpoint) nothing changes.
        await ts.apply([erasure])
        assert len(await ts.erasures()) == 1

    async def test_a_rebuild_of_a_log_without_the_erasure_keeps_the_register(self, ts: TimelineStore) -> None:
        seq = Seq()
        backup = before_erasure(seq)
        await ts.apply([*backup, *seq([erased("cu_ann", merged=("cu_ann2",))])])
        registered = await ts.erasures()
        # NATS restored from the backup: the log ends before the erasure; the store is rebuilt
        # from it into a shadow copy and swapped in, as the projector and `relaydesk rebuild` do.
        fresh = await ts.begin_rebuild()
        await fresh.for_bulk_load()
        await fresh.apply(backup)
        assert await fresh.erasures() == []
        await ts.swap_in(fresh)
        assert await ts.erasures() == registered
        ann = await ts.customer("cu_ann")
        assert ann is not None and not ann.erased  # the rows are the restored log's: the erasure is undone

        # Erased again on the restored log, at a sequence of its own: the new record replaces the old.
        [again] = Seq(next=backup[-1].seq + 1)([erased("cu_ann", reason="DSR-42", merged=("cu_ann2",))])
        await ts.apply([again])
        assert [(r.customer_id, r.seq) for r in await ts.erasures()] == [("cu_ann", again.seq)]

    async def test_a_fresh_copy_that_folded_the_erasure_keeps_its_own_record(self, ts: TimelineStore) -> None:
        seq = Seq()
        backup = before_erasure(seq)
        await ts.apply([*backup, *seq([erased("cu_ann", reason="old")])])
        # The copy's own fold of the log as it is now wins over the record carried over.
        fresh = await ts.begin_rebuild()
        await fresh.apply([*backup, *Seq(next=backup[-1].seq + 1)([erased("cu_ann", reason="new")])])
        await ts.swap_in(fresh)
        assert [(r.reason, r.seq) for r in await ts.erasures()] == [("new", backup[-1].seq + 1)]

    async def test_a_one_customer_rebuild_keeps_the_register(self, ts: TimelineStore) -> None:
        seq = Seq()
        backup = before_erasure(seq)
        await ts.apply([*backup, *seq([erased("cu_bob")])])
        registered = await ts.erasures()
        bob = [e for e in backup if e.subject.startswith("rd.evt.c.cu_bob.")]
        await ts.replace_customer("cu_bob", bob, through=seq.next - 1)
        assert await ts.erasures() == registered

    async def test_a_reader_reads_the_register(self, ts: TimelineStore, backend: Backend) -> None:
        seq = Seq()
        await ts.apply([*before_erasure(seq), *seq([erased("cu_bob")])])
        reader = await backend.open(readonly=True)
        assert [r.customer_id for r in await reader.erasures()] == ["cu_bob"]


class TestSqliteRegister(RegisterContract):
    backend_name = "sqlite"


class TestPostgresRegister(RegisterContract):
    """Skips, saying why, when no PostgreSQL answers (``make_backend``)."""

    backend_name = "postgres"
