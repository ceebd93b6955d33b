"""The pure fold: one stored event in, rows out; no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec

from events.model import AgentStatusChanged, CustomerProfileUpdated, CustomersMerged, MessageReceived, UnknownEvent
from events.store import StoredEvent
from services.timelines.fold import (
    KEEP,
    ConversationSummary,
    CustomerLink,
    SummaryChange,
    fold,
    fold_batch,
    merge,
)
from tests.timelines.helpers import T0, Script, Seq


def test_message_in_carries_text_direction_and_channel() -> None:
    s = Script("cu1", "cv1", channel="email")
    [stored] = Seq(next=42)([s.message("Where is my invoice?")])
    out = fold(stored)
    assert out.entry is not None and out.change is not None
    e = out.entry
    assert (e.customer_id, e.seq, e.conversation_id, e.kind) == ("cu1", 42, "cv1", "message_in")
    assert (e.channel, e.direction, e.text, e.message_id) == ("email", "in", "Where is my invoice?", "m1")
    assert e.detail == {"language": "en"}
    assert out.change.messages == 1 and out.change.status is KEEP


def test_assignment_carries_the_reason_and_sets_status() -> None:
    s = Script("cu1", "cv1")
    [stored] = Seq()([s.assigned("ava")])
    out = fold(stored)
    assert out.entry is not None and out.change is not None
    assert out.entry.reason == {"rule": "best_fit", "step": 0, "score": {"load": -1.0, "skill": 3.0}}
    assert (out.change.status, out.change.agent_id) == ("assigned", "ava")


def test_unknown_and_agent_events_write_nothing() -> None:
    unknown = StoredEvent(seq=1, subject="rd.evt.c.cu.cv", event=UnknownEvent(type="future_fact", raw=b"{}"))
    agent = StoredEvent(seq=2, subject="rd.evt.a.ava", event=AgentStatusChanged(at=T0, agent_id="ava", status="away"))
    assert fold(unknown).entry is None and fold(unknown).change is None
    assert fold(agent).entry is None and fold(agent).change is None


def test_times_are_normalised_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    ev = MessageReceived(
        at=datetime(2026, 11, 23, 14, 0, tzinfo=plus2),
        customer_id="cu",
        conversation_id="cv",
        channel="sms",
        message_id="m",
        provider_message_id="p",
    )
    naive = msgspec.structs.replace(ev, at=datetime(2026, 11, 23, 12, 0))
    for e in (ev, naive):
        out = fold(StoredEvent(seq=1, subject="rd.evt.c.cu.cv", event=e))
        assert out.entry is not None
        assert out.entry.at == T0 and out.entry.at.utcoffset() == timedelta(0)


def test_fold_is_deterministic() -> None:
    s = Script("cu1", "cv1")
    batch = Seq()(s.full())
    assert [fold(b) for b in batch] == [fold(b) for b in batch]


def test_merge_ignores_changes_it_has_already_seen() -> None:
    base = ConversationSummary(
        conversation_id="cv",
        customer_id="cu",
        channel="sms",
        status="assigned",
        agent_id="ava",
        opened_at=T0,
        last_activity_at=T0,
        message_count=3,
        last_seq=10,
    )
    old = SummaryChange(conversation_id="cv", customer_id="cu", seq=10, at=T0, messages=1, status="waiting")
    assert merge(base, old) is base
    new = msgspec.structs.replace(old, seq=11)
    after = merge(base, new)
    assert (after.message_count, after.status, after.agent_id, after.last_seq) == (4, "waiting", "ava", 11)


def test_fold_batch_gives_channel_less_entries_their_conversation_channel() -> None:
    s = Script("cu1", "cv1", channel="chat")
    batch = Seq()([s.opened(), s.offered("ava"), s.accepted("ava"), s.escalated("ava"), s.resolved("bo")])
    rows = fold_batch(batch, lambda _cid: None)
    assert {e.channel for e in rows.entries} == {"chat"}
    summary = rows.summaries["cv1"]
    assert (summary.status, summary.channel, summary.last_seq) == ("resolved", "chat", 5)


def test_fold_batch_loads_each_summary_once() -> None:
    s = Script("cu1", "cv1")
    loads: list[str] = []

    def load(cid: str) -> ConversationSummary | None:
        loads.append(cid)
        return None

    fold_batch(Seq()([s.opened(), s.message(), s.message()]), load)
    assert loads == ["cv1"]


def test_a_full_conversation_summary() -> None:
    s = Script("cu1", "cv1")
    rows = fold_batch(Seq()(s.full()), lambda _cid: None)
    c = rows.summaries["cv1"]
    assert (c.status, c.agent_id, c.transfer_count, c.message_count) == ("resolved", "ava", 1, 3)
    assert c.opened_at is not None and c.resolved_at is not None
    assert len(rows.entries) == len(s.full())


def test_customer_level_events_have_no_conversation() -> None:
    ev = CustomerProfileUpdated(at=T0, customer_id="cu1", tier="gold", flags=("media_attention",), crm_id="SF-1")
    [stored] = Seq()([ev])
    assert stored.subject == "rd.evt.c.cu1._customer"
    out = fold(stored)
    assert out.change is None and out.entry is not None
    assert (out.entry.kind, out.entry.conversation_id) == ("profile_updated", None)
    assert out.entry.detail == {"tier": "gold", "flags": ["media_attention"], "crm_id": "SF-1"}


def test_a_merge_writes_a_link_and_an_entry_on_the_survivor() -> None:
    [stored] = Seq(next=9)([CustomersMerged(at=T0, customer_id="cub", merged_id="cua", actor="op")])
    out = fold(stored)
    assert out.link == CustomerLink(merged_id="cua", survivor_id="cub", seq=9)
    assert out.entry is not None and out.entry.kind == "customers_merged" and out.entry.customer_id == "cub"
    # a merge into itself, or a shape without merged_id, writes nothing
    [self_merge] = Seq()([CustomersMerged(at=T0, customer_id="cub", merged_id="cub")])
    assert fold(self_merge) == fold(StoredEvent(seq=1, subject="rd.evt.c.x.y", event=UnknownEvent(type="t", raw=b"")))


def test_a_linked_identity_is_on_the_timeline_and_the_customer() -> None:
    from events.model import IdentityLinked

    linked = IdentityLinked(at=T0, customer_id="cu1", identity="email:ann@example.com", actor="operator")
    out = fold(StoredEvent(seq=9, subject="rd.evt.c.cu1._customer", event=linked))
    assert out.entry is not None and out.entry.kind == "identity_linked"
    assert out.entry.detail == {"identity": "email:ann@example.com", "actor": "operator"}
    assert out.customer is not None and out.customer.identity == "email:ann@example.com"
