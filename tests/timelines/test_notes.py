"""Internal notes on the timeline: a ``note`` entry (never a message), redacted on erasure,
stored and read back like every entry."""

from __future__ import annotations

from pathlib import Path

from events.model import CustomerErased, NoteAdded
from services.timelines.fold import fold
from services.timelines.redact import ERASED, redact_entry
from services.timelines.sqlite import SqliteTimelineStore
from tests.timelines.helpers import T0, Script, Seq


def note(text: str = "VIP: refund approved by finance") -> NoteAdded:
    return NoteAdded(
        at=T0, customer_id="cu1", conversation_id="cv1", note_id="nt_1", text=text, agent_id="ava", actor="agent:ava"
    )


def test_a_note_is_a_timeline_entry_not_a_message() -> None:
    [stored] = Seq(next=7)([note()])
    out = fold(stored)
    assert out.entry is not None and out.change is not None
    e = out.entry
    assert (e.kind, e.seq, e.conversation_id, e.agent_id, e.message_id) == ("note", 7, "cv1", "ava", "nt_1")
    assert (e.text, e.direction, e.detail) == ("VIP: refund approved by finance", "none", {"actor": "agent:ava"})
    # Not a message: no count, no activity, no first response.
    assert (out.change.messages, out.change.activity, out.change.responded) == (0, False, False)


def test_erasure_redacts_the_text_of_a_note() -> None:
    [stored] = Seq()([note("Ann's passport number is X123")])
    entry = fold(stored).entry
    assert entry is not None
    redacted = redact_entry(entry)
    assert redacted.text == ERASED
    assert (redacted.kind, redacted.agent_id, redacted.message_id) == ("note", "ava", "nt_1")


async def test_notes_are_stored_read_back_and_erased_with_their_customer(tmp_path: Path) -> None:
    s = Script("cu1", "cv1")
    seq = Seq()
    store = await SqliteTimelineStore.open(tmp_path / "timelines.db")
    try:
        await store.apply(seq([s.opened(), s.message("hi"), note()]))
        entries = await store.timeline("cu1")
        assert [e.kind for e in entries] == ["opened", "message_in", "note"]
        summary = await store.conversation("cv1")
        assert summary is not None and summary.message_count == 1
        await store.apply(seq([CustomerErased(at=T0, customer_id="cu1", reason="DSR-1")]))
        [stored_note] = [e for e in await store.timeline("cu1") if e.kind == "note"]
        assert stored_note.text == ERASED
    finally:
        await store.close()
