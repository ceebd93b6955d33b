"""CustomerErased in the timelines: the erased customer's rows keep their shape and counts but
lose their personal data, in both backends, live and after a rebuild; another customer is
untouched; SQLite leaves no copy of the old rows in its files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from events.model import Attachment, CustomerCreated, CustomerErased, CustomersMerged, IdentityLinked, MessageReceived
from events.store import StoredEvent
from services.timelines import TimelineStore
from services.timelines.redact import ERASED, redact_entry
from services.timelines.rows import TimelineEntry
from tests.timelines.helpers import T0, Backend, Script, Seq

SECRET_TEXT = "my card number is 4111 and I live at 12 Elm Street"
OTHER_TEXT = "the other customer keeps every word"


def history(seq: Seq) -> tuple[list[StoredEvent], list[StoredEvent]]:
    """Ann (cu_ann, with cu_ann2 merged into her) and Bob; then Ann is erased."""
    ann = Script("cu_ann", "cv_a1", channel="email")
    ann2 = Script("cu_ann2", "cv_a2", channel="sms")
    bob = Script("cu_bob", "cv_b1")
    before = [
        ann.created(),
        IdentityLinked(at=T0, customer_id="cu_ann", identity="email:ann@example.com", actor="operator"),
        *ann.full(),
        MessageReceived(
            at=T0,
            customer_id="cu_ann",
            conversation_id="cv_a1",
            channel="email",
            message_id="m-att",
            provider_message_id="<att@example.com>",
            text=SECRET_TEXT,
            attachments=(Attachment(name="passport-ann.pdf", url="nats-object://rd_attachments/ab", size=3),),
        ),
        ann2.created(),
        ann2.opened(),
        ann2.message(SECRET_TEXT),
        CustomersMerged(at=T0, customer_id="cu_ann", merged_id="cu_ann2", actor="operator"),
        CustomerCreated(at=T0, customer_id="cu_bob", identity="phone:+15559990000"),
        bob.opened(),
        bob.message(OTHER_TEXT),
    ]
    erased = [
        CustomerErased(at=T0, customer_id="cu_ann", reason="GDPR request", actor="operator", merged_ids=("cu_ann2",))
    ]
    return seq(before), seq(erased)


def no_personal_data(entries: list[TimelineEntry]) -> None:
    for e in entries:
        assert e.text in (None, "", ERASED), e
        text = repr(e.detail)
        for secret in ("ann@example.com", "+15551234567", "passport-ann", "Refunding", "angry customer", "n/a"):
            assert secret not in text, e


async def test_erasure_redacts_rows_but_keeps_their_shape(backend: Backend) -> None:
    store = await backend.open()
    seq = Seq()
    before, erased = history(seq)
    await store.apply(before)
    ann_before = await store.timeline("cu_ann", limit=1000)
    summary_before = await store.conversation("cv_a1")
    customer_before = await store.customer("cu_ann")
    assert any(e.text == SECRET_TEXT for e in ann_before)

    await store.apply(erased)

    ann = await store.timeline("cu_ann", limit=1000)
    no_personal_data(ann)
    # The same rows (plus the erasure's own entry), the same kinds and order: reports keep figures.
    assert [(e.seq, e.kind, e.direction) for e in ann[:-1]] == [(e.seq, e.kind, e.direction) for e in ann_before]
    assert ann[-1].kind == "customer_erased" and ann[-1].detail == {"actor": "operator", "merged_ids": ["cu_ann2"]}
    assert any(e.text == ERASED for e in ann if e.customer_id == "cu_ann2")  # merged: erased together
    attachment = next(e for e in ann if e.message_id == "m-att")
    assert attachment.detail is not None and attachment.detail["attachments"] == [
        {"content_type": None, "size": 3, "name": ERASED}
    ]
    assert await store.conversation("cv_a1") == summary_before
    customer = await store.customer("cu_ann")
    assert customer is not None and customer_before is not None
    assert customer.identities == [ERASED] and customer.erased
    assert customer.conversation_count == customer_before.conversation_count
    assert not await store.customers(q="ann@example.com")
    assert not await store.customers(q="5551234567")
    assert [c.customer_id for c in await store.customers(q="5559990000")] == ["cu_bob"]

    bob = await store.timeline("cu_bob")
    assert any(e.text == OTHER_TEXT for e in bob)
    bob_row = await store.customer("cu_bob")
    assert bob_row is not None and not bob_row.erased and bob_row.identities == ["phone:+15559990000"]

    # A rebuild folds the same events (here the log is still readable: the redaction holds anyway).
    fresh = await store.begin_rebuild()
    await fresh.apply([*before, *erased])
    live = await store.dump()
    await store.swap_in(fresh)
    assert await store.dump() == live

    # Later events of an erased customer are redacted as they come.
    after = seq([Script("cu_ann", "cv_a1", channel="email").reply("ava", "Still there, Ann?")])
    await store.apply(after)
    assert (await store.timeline("cu_ann", after=after[0].seq - 1))[0].text == ERASED


async def test_one_customer_rebuild_of_a_merged_customer_stays_erased(backend: Backend) -> None:
    store = await backend.open()
    seq = Seq()
    before, erased = history(seq)
    await store.apply([*before, *erased])
    # Rebuilding only cu_ann2 reads its own subjects, which do not hold the erasure.
    await store.replace_customer("cu_ann2", seq.history("cu_ann2"), through=seq.next - 1)
    ann2 = await store.timeline("cu_ann2")
    assert ann2 and all(e.text in (None, "", ERASED) for e in ann2)


async def test_sqlite_files_keep_no_copy_of_redacted_rows(tmp_path: Path) -> None:
    from services.timelines import open_store

    path = tmp_path / "data" / "timelines.db"
    store: TimelineStore = await open_store(str(path))
    try:
        seq = Seq()
        before, erased = history(seq)
        await store.apply(before)
        await store.apply(erased)
    finally:
        await store.close()
    files = [p for p in path.parent.iterdir() if p.name.startswith("timelines.db")]
    assert files
    for file in files:
        data = file.read_bytes()
        for secret in (SECRET_TEXT, "ann@example.com", "passport-ann", "Refunding now"):
            assert secret.encode() not in data, (file.name, secret)
        assert file.stat().st_mode & 0o777 == 0o600, file.name
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert OTHER_TEXT.encode() in path.read_bytes()  # the scan can find what is there
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_redaction_leaves_entries_without_personal_data_alone() -> None:
    entry = TimelineEntry(customer_id="cu", seq=1, conversation_id="cv", at=T0, kind="assigned", agent_id="ava")
    assert redact_entry(entry) is entry
