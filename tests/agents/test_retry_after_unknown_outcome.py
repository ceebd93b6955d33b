"""A command whose outcome was unknown, retried with the same ``Idempotency-Key``, over a real
nats-server: the append is stored but its acknowledgement never comes (NATS too slow), so the
API answers 503 "the outcome is unknown: retry (with the same key a command is done at most
once)" and lets the key's record go. Found by a retry audit: the retry of a reply then sent
the customer a second message (a reply tolerates other replies written meanwhile, so the
first attempt's own reply was no conflict), and the retry of a note added it twice."""

from __future__ import annotations

from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client as NATS

import events.store
from events.acked import Ack, publish_acked
from events.model import DeliverReply, NoteAdded, ReplyRequested
from events.streams import IDEMPOTENCY_BUCKET
from services.api import replies, reply_routing

from .helpers import API_TOKEN, AgentSystem, eventually

pytestmark = pytest.mark.integration


class LostAck:
    """``publish_acked`` that stores the next event of ``tag`` and then loses its acknowledgement."""

    def __init__(self) -> None:
        self.armed: bytes | None = None
        self.lost = 0

    def arm(self, tag: str) -> None:
        self.armed = f'"type":"{tag}"'.encode()

    async def __call__(
        self, nc: NATS, subject: str, payload: bytes, *, timeout: float, headers: dict[str, str] | None = None
    ) -> Ack:
        ack = await publish_acked(nc, subject, payload, timeout=timeout, headers=headers)
        if self.armed is not None and self.armed in payload:
            self.armed = None
            self.lost += 1
            raise nats.errors.TimeoutError  # stored, but the API never hears so
        return ack


async def send(s: AgentSystem, path: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": key}
    async with s.system.http.post(s.api + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def a_reply_whose_outcome_was_lost(s: AgentSystem, monkeypatch: pytest.MonkeyPatch) -> tuple[LostAck, str, str]:
    """An accepted conversation and a reply (key ``reply-1``) stored on the log whose answer was
    lost: 503, the outcome is unknown, the client retries. Returns (the lost acks, customer, conversation)."""
    lost = LostAck()
    monkeypatch.setattr(events.store, "publish_acked", lost)
    customer, cid = await s.open()
    await eventually(lambda: s.conversation(cid, "offered"))
    status, body = await send(s, f"/v1/conversations/{cid}/accept", {}, "accept-1")
    assert status == 200, body
    lost.arm("reply_requested")
    status, body = await send(s, f"/v1/conversations/{cid}/reply", {"text": "On its way"}, "reply-1")
    assert (status, lost.lost) == (503, 1), body
    return lost, customer, cid


async def test_a_reply_and_a_note_retried_after_an_unknown_outcome_are_written_once(
    s: AgentSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost, customer, cid = await a_reply_whose_outcome_was_lost(s, monkeypatch)
    status, body = await send(s, f"/v1/conversations/{cid}/reply", {"text": "On its way"}, "reply-1")
    assert status == 202, body

    lost.arm("note_added")
    status, body = await send(s, f"/v1/conversations/{cid}/notes", {"text": "Called them"}, "note-1")
    assert (status, lost.lost) == (503, 2), body
    status, again = await send(s, f"/v1/conversations/{cid}/notes", {"text": "Called them"}, "note-1")
    assert status == 201, again

    events_ = [stored.event for stored in await s.log(customer)]
    replies = [e for e in events_ if isinstance(e, ReplyRequested)]
    notes = [e for e in events_ if isinstance(e, NoteAdded)]
    assert len(replies) == 1, replies  # one message to the customer
    assert [n.note_id for n in notes] == [again["note_id"]]

    # Another key is another reply, as before.
    status, body = await send(s, f"/v1/conversations/{cid}/reply", {"text": "On its way"}, "reply-2")
    assert status == 202, body
    events_ = [stored.event for stored in await s.log(customer)]
    assert sum(isinstance(e, ReplyRequested) for e in events_) == 2


async def test_a_key_used_again_for_another_text_once_its_record_is_gone_sends_that_text(s: AgentSystem) -> None:
    """The reply's id derives from the key: found by a review, a key used again once its record
    was gone (24 h later, or let go after a 503) with another text was answered 202 with the
    first reply, and the new text never reached the customer. The content counts, as for the
    record: the same text is the same command, another text another one."""
    customer, cid = await s.open()
    await eventually(lambda: s.conversation(cid, "offered"))
    status, body = await send(s, f"/v1/conversations/{cid}/accept", {}, "accept-1")
    assert status == 200, body
    status, first = await send(s, f"/v1/conversations/{cid}/reply", {"text": "Your refund is on its way"}, "k-1")
    assert status == 202, first
    status, note = await send(s, f"/v1/conversations/{cid}/notes", {"text": "Refund sent"}, "k-2")
    assert status == 201, note

    async def records_expire() -> None:  # as after 24 h
        kv = await s.store.js.key_value(IDEMPOTENCY_BUCKET)
        for key in await kv.keys():
            await kv.purge(key)

    await records_expire()
    status, second = await send(s, f"/v1/conversations/{cid}/reply", {"text": "Anything else?"}, "k-1")
    assert status == 202 and second["seq"] != first["seq"], second
    status, other = await send(s, f"/v1/conversations/{cid}/notes", {"text": "Asked for more"}, "k-2")
    assert status == 201 and other["note_id"] != note["note_id"], other
    await records_expire()
    status, again = await send(s, f"/v1/conversations/{cid}/reply", {"text": "Your refund is on its way"}, "k-1")
    assert (status, again["seq"]) == (202, first["seq"]), again  # the same command: found, not sent again

    events_ = [stored.event for stored in await s.log(customer)]
    assert [e.text for e in events_ if isinstance(e, ReplyRequested)] == ["Your refund is on its way", "Anything else?"]
    assert [e.text for e in events_ if isinstance(e, NoteAdded)] == ["Refund sent", "Asked for more"]


async def test_a_retried_reply_is_not_queued_again_while_intake_has_outcomes_to_record(
    s: AgentSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left by a chaos audit: the retry of a reply whose first attempt is on the log queued it
    again at once. Had a connector sent it meanwhile and intake not yet recorded its report, a
    NATS restart in between (RD_OUTBOUND forgets the ids of what was taken) sent it twice. It is
    queued again only as the relay would: once intake has recorded every report."""
    _lost, _customer, cid = await a_reply_whose_outcome_was_lost(s, monkeypatch)

    queued: list[str] = []
    queue = reply_routing.queue

    async def counted(nc: NATS, deliver: DeliverReply, cipher: Any) -> None:
        queued.append(deliver.reply_id)
        await queue(nc, deliver, cipher)

    async def lagging(_deps: Any) -> bool:
        return False  # reports on RD_INBOUND intake has not recorded yet

    monkeypatch.setattr(replies, "queue", counted)  # the relay's
    monkeypatch.setattr(reply_routing, "queue", counted)  # the reply command's
    monkeypatch.setattr(replies, "intake_caught_up", lagging)
    status, body = await send(s, f"/v1/conversations/{cid}/reply", {"text": "On its way"}, "reply-1")
    assert status == 202 and queued == [], (body, queued)  # the relay queues it once intake caught up
