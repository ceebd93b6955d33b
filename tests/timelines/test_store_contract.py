"""One abstract suite every timeline backend passes (subclassed per backend below)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from events.model import (
    ConversationOpened,
    CustomerCreated,
    CustomerProfileUpdated,
    CustomersMerged,
    LogEvent,
    UnknownEvent,
)
from events.store import StoredEvent
from services.api.views import summary_json
from services.timelines import CheckpointMismatch, ConversationSummary, ReadOnlyStore, TimelineStore, open_store
from tests.timelines.helpers import T0, Backend, Script, Seq, make_backend, new_id, pg_dsn

# An awaitable step of a test: (wait until a search is held in the database, release it).
Step = Callable[[], Awaitable[None]]


class Crash(Exception):
    pass


class StoreContract:
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

    # -- rows per kind ------------------------------------------------------------

    async def test_every_event_kind_writes_its_row(self, ts: TimelineStore) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        seq = Seq(gap=1)
        batch = seq([s.created(), *s.full()])
        await ts.apply(batch)
        entries = await ts.timeline(s.customer, limit=1000)
        assert [e.kind for e in entries] == [
            "customer_created",
            "opened",
            "message_in",
            "routing_requested",
            "escalation_step",
            "offered",
            "offer_declined",
            "offered",
            "offer_expired",
            "assigned",
            "message_out",
            "message_sent",
            "transferred",
            "offered",
            "offer_accepted",
            "escalated",
            "assigned",
            "message_out",
            "delivery_failed",
            "released",
            "assigned",
            "resolved",
        ]
        assert [e.seq for e in entries] == [b.seq for b in batch]
        by_kind = {e.kind: e for e in entries}
        msg = by_kind["message_in"]
        assert (msg.direction, msg.text, msg.channel, msg.message_id) == ("in", "I was charged twice", "sms", "m1")
        out = by_kind["message_out"]
        assert (out.direction, out.agent_id) == ("out", "dora")
        assigned = entries[9]
        assert assigned.agent_id == "ava"
        assert assigned.reason == {"rule": "best_fit", "step": 0, "score": {"load": -1.0, "skill": 3.0}}
        assert assigned.channel == "sms"  # every entry of an sms conversation is on the sms channel
        assert by_kind["escalation_step"].channel == "sms"
        assert by_kind["transferred"].detail == {
            "from_agent": "ava",
            "to_agent": "chen",
            "to_skill": "technical",
            "transfer_count": 1,
            "note": "n/a",
        }
        assert by_kind["delivery_failed"].detail == {"reason": "carrier rejected"}
        assert entries[0].at.tzinfo is not None
        opened = batch[1].event
        assert isinstance(opened, ConversationOpened) and entries[1].at == opened.at

    async def test_unknown_events_are_skipped_but_advance_the_checkpoint(self, ts: TimelineStore) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        batch = [
            StoredEvent(
                seq=1, subject=f"rd.evt.c.{s.customer}.{s.conversation}", event=UnknownEvent(type="x", raw=b"{}")
            ),
            *Seq(next=2)([s.opened()]),
        ]
        await ts.apply(batch)
        assert [e.kind for e in await ts.timeline(s.customer)] == ["opened"]
        assert await ts.checkpoint() == 2

    # -- paging -------------------------------------------------------------------

    async def test_paging_with_after_limit_and_channel(self, ts: TimelineStore) -> None:
        cust = new_id("cu")
        sms = Script(cust, new_id("cv"), channel="sms")
        mail = Script(cust, new_id("cv"), channel="email")
        other = Script(new_id("cu"), new_id("cv"))
        events: list[LogEvent] = []
        for i in range(5):
            events += [sms.message(f"s{i}"), mail.message(f"e{i}"), other.message("not mine")]
        events = [sms.opened(), mail.opened(), *events]
        await ts.apply(Seq()(events))
        page1 = await ts.timeline(cust, limit=4)
        page2 = await ts.timeline(cust, after=page1[-1].seq, limit=4)
        rest = await ts.timeline(cust, after=page2[-1].seq, limit=100)
        everything = await ts.timeline(cust, limit=100)
        assert len(everything) == 12
        assert page1 + page2 + rest == everything
        assert [e.seq for e in everything] == sorted(e.seq for e in everything)
        emails = await ts.timeline(cust, channel="email", limit=100)
        assert [e.text for e in emails if e.kind == "message_in"] == [f"e{i}" for i in range(5)]
        assert {e.channel for e in emails} == {"email"}
        assert await ts.timeline(cust, after=everything[-1].seq) == []
        assert await ts.timeline(new_id("nobody")) == []

    async def test_a_message_with_a_nul_character_is_on_the_timeline(self, ts: TimelineStore) -> None:
        """Found by an audit: PostgreSQL refused text and JSON holding NUL, so a signed SMS
        ``x\\x00y`` was quarantined by the projector and missing from the timeline (SQLite kept it)."""
        s = Script(new_id("cu"), new_id("cv"))
        opened = msgspec.structs.replace(s.opened(), contact="+1555\x001234")  # in the entry's JSON detail
        await ts.apply(Seq()([s.created(), opened, s.message("x\x00y"), s.message("after")]))
        entries = await ts.timeline(s.customer, limit=100)
        texts = [e.text for e in entries if e.kind == "message_in"]
        assert len(texts) == 2 and texts[1] == "after"
        assert texts[0] is not None and texts[0].startswith("x") and texts[0].endswith("y")
        [contact] = [e.detail["contact"] for e in entries if e.kind == "opened" and e.detail]
        assert contact.startswith("+1555") and contact.endswith("1234")

    # -- summaries ----------------------------------------------------------------

    async def test_conversation_status_transitions(self, ts: TimelineStore) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        seq = Seq()

        async def status_after(*events: object) -> tuple[str, str | None]:
            await ts.apply(seq(list(events)))  # type: ignore[arg-type]
            c = await ts.conversation(s.conversation)
            assert c is not None
            return c.status, c.agent_id

        assert await status_after(s.opened(), s.message(), s.routing()) == ("waiting", None)
        assert await status_after(s.offered("bruno")) == ("offered", "bruno")
        assert await status_after(s.declined("bruno")) == ("waiting", None)
        assert await status_after(s.offered("chen")) == ("offered", "chen")
        assert await status_after(s.expired("chen")) == ("waiting", None)
        assert await status_after(s.offered("ava"), s.accepted("ava")) == ("assigned", "ava")
        assert await status_after(s.transferred("ava", "chen")) == ("waiting", None)
        assert await status_after(s.assigned("chen")) == ("assigned", "chen")
        assert await status_after(s.escalated("chen")) == ("waiting", None)
        assert await status_after(s.assigned("dora")) == ("assigned", "dora")
        assert await status_after(s.released("dora")) == ("waiting", None)
        assert await status_after(s.assigned("ava"), s.reply("ava")) == ("assigned", "ava")
        assert await status_after(s.resolved("ava")) == ("resolved", "ava")
        c = await ts.conversation(s.conversation)
        assert c is not None
        assert c.channel == "sms"
        assert c.customer_id == s.customer
        assert c.transfer_count == 1
        assert c.message_count == 2
        assert c.opened_at is not None and c.resolved_at is not None
        assert c.last_reason == {"rule": "best_fit", "step": 0, "score": {"load": -1.0, "skill": 3.0}}
        assert c.last_activity_at == c.resolved_at
        # what service metrics need: time to assign, first response, SLA, decline/expiry counts
        at = {e.kind: e.at for e in reversed(await ts.timeline(s.customer, limit=1000))}  # first of each kind
        assert c.priority == 2 and c.sla_due is not None and c.sla_due > at["routing_requested"]
        assert c.first_assigned_at == at["offer_accepted"]
        assert c.first_response_at == at["message_out"]
        assert (c.offers_declined, c.offers_expired) == (1, 1)
        assert await ts.conversation(new_id("none")) is None

    async def test_a_republished_event_writes_no_second_row(self, ts: TimelineStore) -> None:
        # The same facts again at later sequences (a partial restore after JetStream's
        # duplicate window, a replay tool run twice): one entry each, each message counted once,
        # whether the copy comes in a later batch or in the same one, open or resolved.
        s = Script(new_id("cu"), new_id("cv"))
        seq = Seq()
        first = [s.opened(), s.message("where is my parcel?"), s.routing(), s.offered("ava"), s.accepted("ava")]
        await ts.apply(seq(first))
        await ts.apply(seq([first[1], s.message("any news?"), first[1]]))
        entries = await ts.timeline(s.customer, limit=1000)
        assert [e.text for e in entries if e.kind == "message_in"] == ["where is my parcel?", "any news?"]
        open_ = await ts.conversation(s.conversation)
        assert open_ is not None and (open_.status, open_.message_count) == ("assigned", 2)
        resolved = s.resolved("ava")
        await ts.apply(seq([resolved]))
        before = await ts.timeline(s.customer, limit=1000)
        await ts.apply(seq([*first, resolved]))  # everything again, after the resolution
        assert await ts.timeline(s.customer, limit=1000) == before
        c = await ts.conversation(s.conversation)
        assert c is not None and (c.status, c.agent_id, c.message_count) == ("resolved", "ava", 2)
        assert "folded" not in summary_json(c)  # the fold's bookkeeping, not the API's

    async def test_conversations_filtered_by_status_and_agent(self, ts: TimelineStore) -> None:
        cust = new_id("cu")
        scripts = [Script(cust, new_id("cv")) for _ in range(4)]
        a, b, c, d = scripts
        events: list[LogEvent] = [x.opened() for x in scripts]
        events += [a.assigned("ava"), b.assigned("ava"), c.offered("bruno"), b.resolved("ava")]
        await ts.apply(Seq()(events))

        def ids(rows: list[ConversationSummary]) -> list[str]:
            return [r.conversation_id for r in rows]

        assert ids(await ts.conversations(customer_id=cust, status="assigned")) == [a.conversation]
        assert ids(await ts.conversations(customer_id=cust, status="offered")) == [c.conversation]
        assert ids(await ts.conversations(customer_id=cust, status="waiting")) == [d.conversation]
        assert set(ids(await ts.conversations(agent_id="ava", customer_id=cust))) == {a.conversation, b.conversation}
        everything = await ts.conversations(customer_id=cust)
        assert len(everything) == 4
        # most recently active first
        assert [r.last_activity_at for r in everything] == sorted(
            (r.last_activity_at for r in everything), reverse=True
        )
        assert len(await ts.conversations(customer_id=cust, limit=2)) == 2

    async def test_resolved_conversations_page_by_resolution_while_notes_come(self, ts: TimelineStore) -> None:
        """Found by a scale audit: resolved conversations were listed by last activity with a
        limit and no cursor. Now newest resolution first, then id, after a cursor of both: notes
        written after a resolution and new resolutions between pages neither repeat nor skip one."""
        from datetime import timedelta

        from events.model import NoteAdded

        seq = Seq()
        scripts: list[Script] = []
        for n in range(9):
            s = Script(new_id("cu"), f"cv_{n:02d}")
            s.clock = T0 + timedelta(minutes=n // 2)  # pairs resolved in the same second: ties
            scripts.append(s)
            await ts.apply(seq([s.opened(), s.assigned("ava" if n % 3 else "bruno"), s.resolved("ava")]))
        open_one = Script(new_id("cu"), new_id("cv"))
        await ts.apply(seq([open_one.opened()]))

        def key(c: ConversationSummary) -> tuple[Any, str]:
            return c.resolved_at, c.conversation_id

        def note(s: Script) -> NoteAdded:
            return NoteAdded(**s._ids(), note_id=new_id("nt"), text="wrap-up", actor="ava")

        everything = await ts.resolved_conversations(limit=100)
        assert [c.status for c in everything] == ["resolved"] * 9
        assert [key(c) for c in everything] == sorted(map(key, everything), reverse=True)
        first = await ts.resolved_conversations(limit=4)
        assert first == everything[:4]
        # Meanwhile: notes on one shown and one not yet shown, and a new resolution (the newest
        # of all: before the first page, not after it).
        by_id = {s.conversation: s for s in scripts}
        later = everything[6].conversation_id
        await ts.apply(seq([note(by_id[first[0].conversation_id]), note(by_id[later])]))
        late = Script(new_id("cu"), "cv_late", clock=T0 + timedelta(hours=1))
        await ts.apply(seq([late.opened(), late.resolved("ava")]))
        pages, after = [first], key(first[-1])
        while True:
            page = await ts.resolved_conversations(after=after, limit=4)
            if not page:
                break
            pages.append(page)
            after = key(page[-1])
        listed = [c.conversation_id for page in pages for c in page]
        assert listed == [c.conversation_id for c in everything]  # each once, in order
        assert later in listed and "cv_late" not in listed

        # One agent's, paged the same way.
        bruno = [c.conversation_id for c in everything if c.agent_id == "bruno"]
        assert len(bruno) == 3
        one = await ts.resolved_conversations(agent_id="bruno", limit=2)
        rest = await ts.resolved_conversations(agent_id="bruno", after=key(one[-1]), limit=2)
        assert [c.conversation_id for c in one + rest] == bruno

    async def test_resolved_conversations_have_their_index_after_a_rebuild(self, ts: TimelineStore) -> None:
        assert await self.resolved_indexes(ts) == 2
        fresh = await ts.begin_rebuild()
        await fresh.for_bulk_load()  # a rebuild fills its copy without the secondary indexes
        s = Script(new_id("cu"), new_id("cv"))
        await fresh.apply(Seq()([s.opened(), s.resolved("ava")]))
        await ts.swap_in(fresh)
        assert await self.resolved_indexes(ts) == 2
        assert [c.conversation_id for c in await ts.resolved_conversations()] == [s.conversation]

    async def resolved_indexes(self, ts: TimelineStore) -> int:
        """How many indexes of the live conversations table serve resolved_conversations. Per backend."""
        raise NotImplementedError

    async def test_customer_summaries_and_search(self, ts: TimelineStore) -> None:
        cust = new_id("cu")
        sms = Script(cust, new_id("cv"), channel="sms")
        mail = Script(cust, new_id("cv"), channel="email")
        other = Script(new_id("cu"), new_id("cv"))
        events: list[LogEvent] = [
            sms.created(),
            sms.opened(),
            sms.message(),
            CustomerCreated(at=T0, customer_id=cust, identity="email:Ana@Example.com"),
            CustomerProfileUpdated(at=T0, customer_id=cust, tier="gold", flags=("media_attention",), crm_id="SF-77"),
            mail.opened(),
            mail.message(),
            other.created(),
            other.opened(),
        ]
        await ts.apply(Seq()(events))
        c = await ts.customer(cust)
        assert c is not None
        assert c.identities == ["email:Ana@Example.com", "sms:+15551234567"]
        assert (c.tier, c.flags, c.crm_id, c.conversation_count) == ("gold", ["media_attention"], "SF-77", 2)
        assert c.created_at is not None and c.last_activity_at == events[6].at
        assert await ts.customer(new_id("nobody")) is None
        assert [x.customer_id for x in await ts.customers(q="ana@example")] == [cust]
        assert [x.customer_id for x in await ts.customers(q="sf-77")] == [cust]
        assert [x.customer_id for x in await ts.customers(q=cust.upper())] == [cust]
        assert cust in [x.customer_id for x in await ts.customers(tier="gold")]
        assert other.customer not in [x.customer_id for x in await ts.customers(tier="gold", limit=1000)]
        assert await ts.customers(q="100%_nobody") == []

    async def test_a_search_finds_a_name_typed_in_either_unicode_form(self, ts: TimelineStore) -> None:
        # "josé" from a Mac's keyboard is NFD (e + combining acute): it found no NFC customer.
        nfc, nfd = new_id("cu"), new_id("cu")
        await ts.apply(
            Seq()(
                [
                    CustomerCreated(at=T0, customer_id=nfc, identity=f"email:jos\u00e9.{nfc}@example.com"),
                    CustomerCreated(at=T0, customer_id=nfd, identity=f"email:Jose\u0301.{nfd}@example.com"),
                ]
            )
        )
        assert [x.customer_id for x in await ts.customers(q=f"jose\u0301.{nfc}")] == [nfc]
        assert [x.customer_id for x in await ts.customers(q=f"JOS\u00c9.{nfd}")] == [nfd]

    async def test_a_search_folds_case_as_unicode_does(self, ts: TimelineStore) -> None:
        # Lower case is not case folding: "strasse" found no "Straße", "istanbul" no "İstanbul"
        # (whose lower case is i + U+0307 COMBINING DOT ABOVE).
        german, turkish, dotless = new_id("cu"), new_id("cu"), new_id("cu")
        await ts.apply(
            Seq()(
                [
                    CustomerCreated(at=T0, customer_id=german, identity=f"chat:user:Straße-{german}"),
                    CustomerCreated(at=T0, customer_id=turkish, identity=f"chat:user:İstanbul-{turkish}"),
                    CustomerCreated(at=T0, customer_id=dotless, identity=f"chat:user:ıslak-{dotless}"),
                ]
            )
        )
        for q in (f"strasse-{german}", f"STRASSE-{german}", f"straße-{german}"):
            assert [x.customer_id for x in await ts.customers(q=q)] == [german], q
        for q in (f"istanbul-{turkish}", f"ISTANBUL-{turkish}", f"İSTANBUL-{turkish}"):
            assert [x.customer_id for x in await ts.customers(q=q)] == [turkish], q
        # The dotless ı is another letter: "islak" is not "ıslak".
        assert await ts.customers(q=f"islak-{dotless}") == []
        assert [x.customer_id for x in await ts.customers(q=f"ıslak-{dotless}")] == [dotless]

    async def test_a_merge_shows_both_histories_on_the_survivor(self, ts: TimelineStore) -> None:
        a = Script(new_id("cua"), new_id("cv"), channel="sms")
        b = Script(new_id("cub"), new_id("cv"), channel="email")
        c = Script(new_id("cuc"), new_id("cv"), channel="chat")
        seq = Seq()
        await ts.apply(seq([a.created(), a.opened(), a.message("from sms")]))
        await ts.apply(seq([b.created(), b.opened(), b.message("from email")]))
        await ts.apply(seq([c.created(), c.opened(), c.message("from chat")]))
        merges = seq(
            [
                CustomersMerged(at=T0, customer_id=a.customer, merged_id=c.customer, actor="op"),
                CustomersMerged(at=T0, customer_id=b.customer, merged_id=a.customer, actor="op"),
            ]
        )
        await ts.apply(merges)
        await ts.apply(seq([b.message("after the merge")]))
        texts = [e.text for e in await ts.timeline(b.customer, limit=1000) if e.kind == "message_in"]
        assert texts == ["from sms", "from email", "from chat", "after the merge"]
        merged_entries = [e for e in await ts.timeline(b.customer, limit=1000) if e.kind == "customers_merged"]
        assert [e.detail for e in merged_entries] == [
            {"merged_id": c.customer, "actor": "op"},
            {"merged_id": a.customer, "actor": "op"},
        ]
        assert [e.text for e in await ts.timeline(b.customer, channel="sms") if e.kind == "message_in"] == ["from sms"]
        # the merged customer's own timeline is unchanged; nothing was rewritten
        assert [e.text for e in await ts.timeline(a.customer) if e.kind == "message_in"] == ["from sms", "from chat"]
        assert {x.conversation_id for x in await ts.conversations(customer_id=b.customer)} == {
            a.conversation,
            b.conversation,
            c.conversation,
        }
        survivor = await ts.customer(b.customer)
        assert survivor is not None
        assert survivor.merged == sorted([a.customer, c.customer]) and survivor.merged_into is None
        assert survivor.conversation_count == 3
        assert survivor.identities == sorted({"sms:+15551234567", "email:+15551234567", "chat:+15551234567"})
        gone = await ts.customer(a.customer)
        assert gone is not None and gone.merged_into == b.customer
        found = {x.customer_id: x.merged_into for x in await ts.customers(q=a.customer)}
        assert found == {a.customer: b.customer}
        # a one-customer rebuild of the survivor keeps the links
        before = await ts.dump()
        await ts.replace_customer(b.customer, seq.history(b.customer), through=await ts.checkpoint())
        assert await ts.dump() == before

    # -- checkpoint, idempotence, crashes ----------------------------------------

    async def test_checkpoint_and_idempotence(self, ts: TimelineStore, backend: Backend) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        batch = Seq(next=10)(s.full())
        assert await ts.checkpoint() == 0
        await ts.apply(batch)
        assert await ts.checkpoint() == batch[-1].seq
        before = await ts.dump()
        await ts.apply(batch)  # a replay of the same batch
        await ts.apply(batch[3:9])  # and of a part of it
        assert await ts.dump() == before
        assert await ts.checkpoint() == batch[-1].seq
        # an overlapping batch applies only its new part
        more = Seq(next=batch[-1].seq + 1)([s.message("again")])
        await ts.apply([*batch[-3:], *more])
        assert len(await ts.timeline(s.customer, limit=1000)) == len(batch) + 1
        conv = await ts.conversation(s.conversation)
        # "again" came after the resolution, which only a re-published message can (intake
        # opens a new conversation): on the timeline, not counted (1 in + 2 replies)
        assert conv is not None and conv.message_count == 3

    async def test_through_and_expect(self, ts: TimelineStore) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        await ts.apply(Seq(next=5)([s.opened()]), through=9)
        assert await ts.checkpoint() == 9
        with pytest.raises(CheckpointMismatch) as caught:
            await ts.apply(Seq(next=10)([s.message()]), expect=3)
        assert caught.value.actual == 9
        await ts.apply(Seq(next=10)([s.message()]), expect=9)
        assert await ts.checkpoint() == 10

    async def test_partition_keys_have_their_own_checkpoints(self, ts: TimelineStore) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        await ts.apply(Seq(next=3)([s.opened()]), key="p0of2")
        await ts.apply([], key="p1of2", through=7)
        assert await ts.checkpoint("p0of2") == 3
        assert await ts.checkpoint("p1of2") == 7
        assert await ts.checkpoint() == 0
        assert await ts.checkpoints() == {"p0of2": 3, "p1of2": 7}

    async def test_a_crash_mid_batch_leaves_nothing_and_replays_cleanly(self, ts: TimelineStore) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        seq = Seq()
        first = seq([s.opened(), s.message("one")])
        await ts.apply(first)
        batch = seq([s.message("two"), s.routing(), s.assigned("ava"), s.reply("ava"), s.resolved("ava")])
        before = await ts.dump()

        def crash(i: int) -> None:
            if i == 2:
                raise Crash("power cut")

        ts.fault_hook = crash  # type: ignore[attr-defined]
        with pytest.raises(Crash):
            await ts.apply(batch)
        ts.fault_hook = None  # type: ignore[attr-defined]
        assert await ts.dump() == before
        assert await ts.checkpoint() == first[-1].seq
        conv = await ts.conversation(s.conversation)
        assert conv is not None and conv.status == "waiting" and conv.message_count == 1
        await ts.apply(batch)
        assert await ts.checkpoint() == batch[-1].seq
        assert len(await ts.timeline(s.customer)) == 7
        conv = await ts.conversation(s.conversation)
        assert conv is not None and conv.status == "resolved" and conv.message_count == 3

    async def test_a_reader_sees_the_writer_and_cannot_write(self, ts: TimelineStore, backend: Backend) -> None:
        reader = await backend.open(readonly=True)
        s = Script(new_id("cu"), new_id("cv"))
        await ts.apply(Seq()([s.opened(), s.message()]))
        assert len(await reader.timeline(s.customer)) == 2
        assert await reader.checkpoint() == 2
        with pytest.raises(ReadOnlyStore):
            await reader.apply(Seq(next=3)([s.message()]))

    async def test_concurrent_reads_during_writes(self, ts: TimelineStore, backend: Backend) -> None:
        reader = await backend.open(readonly=True)
        s = Script(new_id("cu"), new_id("cv"))
        seq = Seq()
        await ts.apply(seq([s.opened()]))

        async def write() -> None:
            for _ in range(20):
                await ts.apply(seq([s.message() for _ in range(10)]))

        async def read() -> list[int]:
            seen = []
            for _ in range(20):
                seen.append(len(await reader.timeline(s.customer, limit=1000)))
                await asyncio.sleep(0)
            return seen

        _, seen = await asyncio.gather(write(), read())
        assert seen == sorted(seen)  # never goes backwards, never sees half a batch
        assert all((n - 1) % 10 == 0 for n in seen)
        assert len(await reader.timeline(s.customer, limit=1000)) == 201

    async def test_rows_serialise_to_json(self, ts: TimelineStore) -> None:
        s = Script(new_id("cu"), new_id("cv"))
        await ts.apply(Seq()(s.full()))
        body = msgspec.json.decode(msgspec.json.encode(await ts.timeline(s.customer, limit=3)))
        assert body[1]["kind"] == "message_in" and body[1]["text"] == "I was charged twice"
        assert body[0]["at"].endswith("Z")
        conv = msgspec.json.decode(msgspec.json.encode(await ts.conversation(s.conversation)))
        assert conv["status"] == "resolved"

    # -- a search beside the other reads ----------------------------------------------

    async def hold_searches(self, ts: TimelineStore) -> tuple[Step, Step]:
        """Make the next customer search stop inside the database until released: (wait until
        it is held there, release it). Per backend."""
        raise NotImplementedError

    async def test_a_search_does_not_hold_up_the_other_reads(self, ts: TimelineStore) -> None:
        """Found by a scale audit: a search scans every customer (0.5-1.5 s at a million) on
        the store's one connection, and every timeline the console asked for meanwhile waited."""
        s = Script(new_id("cu"), new_id("cv"))
        await ts.apply(Seq(gap=1)([s.created(), *s.full()]))
        held, release = await self.hold_searches(ts)
        # A text that finds the customer: with the index, a search that finds nothing reads no row.
        search = asyncio.create_task(ts.customers(q=s.customer))
        try:
            await held()
            entries = await asyncio.wait_for(ts.timeline(s.customer, limit=5), 10)
            assert len(entries) == 5 and not search.done()
        finally:
            await release()
        assert [c.customer_id for c in await asyncio.wait_for(search, 30)] == [s.customer]


class TestSqliteStore(StoreContract):
    backend_name = "sqlite"

    async def resolved_indexes(self, ts: TimelineStore) -> int:
        from services.timelines.sqlite import SqliteTimelineStore

        assert isinstance(ts, SqliteTimelineStore)
        rows = ts._conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'conversations'"
        ).fetchall()
        return sum(
            str(r[0]).endswith(
                (
                    "(status, resolved_at, conversation_id)",
                    "(agent_id, resolved_at, conversation_id) WHERE status = 'resolved'",
                )
            )
            for r in rows
        )

    async def test_resolved_pages_are_a_range_of_the_index(self, ts: TimelineStore, backend: Backend) -> None:
        """Each page a range of the index, no sort of every resolved conversation; a file from
        before the index gets it when opened."""
        from services.timelines.sqlite import SqliteTimelineStore

        assert isinstance(ts, SqliteTimelineStore)
        for agent in (None, "ava"):
            sql, args = ts.sql.resolved_list(agent, ("2026-01-01T00:00:00+00:00", "cv_1"), 10)
            plan = " | ".join(str(r[3]) for r in ts._conn.execute("EXPLAIN QUERY PLAN " + sql, args))
            assert "resolved_at,conversation_id)<" in plan and "TEMP B-TREE" not in plan, plan
        for (name,) in ts._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '%resolved_at, conversation_id)%'"
        ).fetchall():
            ts._conn.execute(f"DROP INDEX {name}")
        await ts.close()
        assert await self.resolved_indexes(await backend.open()) == 2

    async def hold_searches(self, ts: TimelineStore) -> tuple[Step, Step]:
        from services.timelines.sqlite import SqliteTimelineStore

        assert isinstance(ts, SqliteTimelineStore)
        await ts.customers(q="opens a search connection if the store keeps one")
        inside, gate = threading.Event(), threading.Event()

        def wait_here() -> int:
            inside.set()
            gate.wait(60)
            return 1

        for conn in (ts._conn, *(ts._search_lane or ())[:1]):
            conn.create_function("held_here", 0, wait_here)
        listing = ts.sql.customer_list

        def held_list(q: str | None, tier: str | None, limit: int, *within: Any) -> tuple[str, list[Any]]:
            sql, args = listing(q, tier, limit, *within)
            return sql.replace(" WHERE ", " WHERE held_here() = 1 AND ", 1), args

        ts.sql.customer_list = held_list  # type: ignore[method-assign]

        async def held() -> None:
            assert await asyncio.to_thread(inside.wait, 30), "the search never reached the database"

        async def release() -> None:
            gate.set()

        return held, release


class TestPostgresStore(StoreContract):
    """Skips, saying why, when no PostgreSQL answers (``make_backend``; see ``helpers.postgres``)."""

    backend_name = "postgres"

    async def resolved_indexes(self, ts: TimelineStore) -> int:
        from services.timelines.postgres import PostgresTimelineStore

        assert isinstance(ts, PostgresTimelineStore)
        async with await psycopg_connect(pg_dsn()) as conn:
            cur = await conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'conversations'", (ts.schema,)
            )
            rows = await cur.fetchall()
        return sum(
            str(r[0]).endswith(
                (
                    "(status, resolved_at, conversation_id)",
                    "(agent_id, resolved_at, conversation_id) WHERE (status = 'resolved'::text)",
                )
            )
            for r in rows
        )

    async def hold_searches(self, ts: TimelineStore) -> tuple[Step, Step]:
        import psycopg

        from services.timelines.postgres import PostgresTimelineStore

        assert isinstance(ts, PostgresTimelineStore)
        key = random.randrange(1, 2**31)
        holder = await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True)
        await holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        listing = ts.sql.customer_list

        def held_list(q: str | None, tier: str | None, limit: int, *within: Any) -> tuple[str, list[Any]]:
            sql, args = listing(q, tier, limit, *within)
            wait = f"(SELECT 1 FROM (SELECT pg_advisory_lock_shared({key})) AS held) = 1 AND "
            return sql.replace(" WHERE ", " WHERE " + wait, 1), args

        ts.sql.customer_list = held_list  # type: ignore[method-assign]

        async def held() -> None:
            for _ in range(600):
                cur = await holder.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted", (key,)
                )
                row = await cur.fetchone()
                if row is not None and row[0]:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the search never reached the database")

        async def release() -> None:
            await holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
            await holder.close()

        return held, release

    async def test_a_dropped_connection_is_replaced(self, ts: TimelineStore) -> None:
        from services.timelines.postgres import PostgresTimelineStore

        assert isinstance(ts, PostgresTimelineStore)
        s = Script(new_id("cu"), new_id("cv"))
        await ts.apply(Seq()([s.opened()]))
        await ts._conn.close()  # as if the server went away between two batches
        await ts.apply(Seq(next=2)([s.message()]))
        assert len(await ts.timeline(s.customer)) == 2

    async def test_an_older_schema_gets_the_new_columns(self, backend: Backend) -> None:
        import psycopg

        from tests.timelines.helpers import drop_schemas

        dsn = backend.target
        schema = new_id("t_old_")
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(
                f'CREATE TABLE "{schema}".conversations (conversation_id text PRIMARY KEY, customer_id text NOT NULL,'
                " channel text, status text NOT NULL, agent_id text, opened_at timestamptz,"
                " last_activity_at timestamptz NOT NULL, resolved_at timestamptz, transfer_count integer NOT NULL,"
                " message_count integer NOT NULL, last_reason jsonb, last_seq bigint NOT NULL)"
            )
            await conn.execute(
                f'CREATE TABLE "{schema}".timeline (customer_id text, seq bigint, conversation_id text,'
                " at timestamptz, kind text, channel text, direction text, agent_id text, message_id text,"
                " text text, reason jsonb, detail jsonb, PRIMARY KEY (customer_id, seq))"
            )
        try:
            ts = await open_store(dsn, schema=schema)
            s = Script(new_id("cu"), new_id("cv"))
            await ts.apply(Seq()([s.opened(), s.routing()]))
            conv = await ts.conversation(s.conversation)
            assert conv is not None and conv.priority == 2
            assert await ts.fold_version() is None  # the projector will rebuild it
            await ts.close()
        finally:
            await drop_schemas(dsn, schema)


async def psycopg_connect(dsn: str) -> Any:
    import psycopg

    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)
