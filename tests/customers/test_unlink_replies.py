"""Unlinking an address takes back the replies written before it that have no outcome yet.
Before, resolving the conversations on the address stopped new replies only: a reply an agent
wrote just before waited in ``RD_OUTBOUND`` (no connector had sent it yet) and went out to the
number's new holder, and the API's reply relay queued it again from the log had it been removed.
Now the unlink writes ``DeliveryFailed`` ("the address was unlinked from the customer") for it
and erases its ``DeliverReply`` from ``RD_OUTBOUND``; a reply on another address's conversation
stays queued, and asking again takes back nothing more. Over a real nats-server: the whole
system in-process (no SMS connector taking replies) for the API's side, the customers' commands
alone for a crash between the two steps and a conversation's later reply held behind another."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import decode_reply
from events.model import CustomerCreated, DeliveryFailed, IdentityLinked, ReplyRequested
from events.msg_get import stored_messages
from events.store import Append, EventStore
from services.api import reply_routing
from services.api.replies import PendingReplies
from services.bus.embedded import EmbeddedNats
from services.customers import unlink_replies
from services.customers.unlink import unlink
from services.customers.unlink_replies import UNLINKED_REASON
from tests.agents.helpers import API_TOKEN, AgentSystem, agent_system, agents_config, eventually, ok
from tests.customers.helpers import customer, customers_of
from tests.customers.test_unlink_conversations import _open

pytestmark = pytest.mark.integration

NUMBER = "+15550108888"
OTHER = "+15550109999"


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    config = agents_config(tmp_path, clean_nats.url)
    config.connectors["sms"]["outbound"] = False  # replies wait on rd.out.sms: nothing sends them
    # The relay sweeps often: a reply it still held as waiting would be queued again at once.
    config.api = msgspec.structs.replace(config.api, reply_requeue_seconds=0.3)
    async with agent_system(config, clean_nats) as system:
        yield system


async def _queued(nc: NATS) -> dict[str, int]:
    """reply id -> sequence of every DeliverReply waiting in RD_OUTBOUND."""
    found = {}
    async for seq, data in stored_messages(nc.jetstream(), subjects.OUTBOUND_STREAM, subjects.OUTBOUND_ALL):
        found[decode_reply(data).reply_id] = seq
    return found


def _failures(events: Sequence[object], reply_id: str) -> list[DeliveryFailed]:
    return [e for e in events if isinstance(e, DeliveryFailed) and e.reply_id == reply_id]


def _reply_ids(events: Sequence[object], cid: str) -> list[str]:
    return [e.reply_id for e in events if isinstance(e, ReplyRequested) and e.conversation_id == cid]


async def test_unlinking_a_number_takes_back_the_reply_waiting_for_it(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    ann = "cu_unlinkreply"
    now = datetime.now(UTC)
    await s.store.append(Append(CustomerCreated(at=now, customer_id=ann, identity=f"phone:{NUMBER}")))
    await s.store.append(Append(IdentityLinked(at=now, customer_id=ann, identity=f"phone:{OTHER}")))
    on_number, on_other = "cv_replynumber", "cv_replyother"
    await _open(s.store, ann, on_number, "sms", NUMBER)
    await s.offered_to(on_number, "ava")
    await ok(s, "POST", f"/v1/conversations/{on_number}/accept", ava)
    await eventually(lambda: s.conversation(on_number, "assigned"))
    await _open(s.store, ann, on_other, "sms", OTHER, routed=False)
    await eventually(lambda: s.conversation(on_other))
    await ok(s, "POST", f"/v1/conversations/{on_number}/reply", ava, {"text": "Your refund is on its way"})
    await ok(s, "POST", f"/v1/conversations/{on_other}/reply", API_TOKEN, {"text": "Anything else?"})
    events = [e.event for e in await s.log(ann)]
    (withdrawn,), (kept,) = _reply_ids(events, on_number), _reply_ids(events, on_other)
    nc = s.store.nc
    before = await eventually(lambda: _both_queued(nc, withdrawn, kept))

    status, body = await s.call(
        "DELETE", f"/v1/customers/{ann}/identities/sms:{NUMBER}", API_TOKEN, {"reason": "number passed on"}
    )
    assert status == 200, body
    assert (body["conversations_resolved"], body["replies_withdrawn"]) == (1, 1), body

    # Gone from RD_OUTBOUND; the other number's reply waits there untouched (the same message).
    assert await _queued(nc) == {kept: before[kept]}
    # Failed on the log with the reason, on the conversation's subject; the other one has no outcome.
    events = [e.event for e in await s.log(ann)]
    assert [(f.channel, f.reason) for f in _failures(events, withdrawn)] == [("sms", UNLINKED_REASON)]
    assert _failures(events, kept) == []
    # The relay's fold of the log no longer holds it as waiting (it never queues it again); it
    # still holds the other one.
    pending = PendingReplies()
    for stored in await s.log(ann):
        pending.apply(stored)
    assert set(pending.by_id) == {kept}

    # Again (a retry): nothing more taken back, nothing failed twice, the other reply still waits.
    status, body = await s.call("DELETE", f"/v1/customers/{ann}/identities/sms:{NUMBER}", API_TOKEN)
    assert status == 200, body
    assert (body["already_unlinked"], body["conversations_resolved"], body["replies_withdrawn"]) == (True, 0, 0), body
    events = [e.event for e in await s.log(ann)]
    assert len(_failures(events, withdrawn)) == 1
    assert _failures(events, kept) == []
    assert await _queued(nc) == {kept: before[kept]}


async def _both_queued(nc: NATS, *reply_ids: str) -> dict[str, int] | None:
    queued = await _queued(nc)
    return queued if set(reply_ids) <= set(queued) else None


def _reply(customer_id: str, cid: str, reply_id: str) -> ReplyRequested:
    return ReplyRequested(
        at=datetime.now(UTC),
        customer_id=customer_id,
        conversation_id=cid,
        channel="sms",
        reply_id=reply_id,
        text="see you",
        actor="agent:ava",
    )


async def test_a_retry_after_a_crash_before_the_queue_was_read_erases_it(
    nc: NATS, store: EventStore, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DeliveryFailed went on the log, then the process died before RD_OUTBOUND was read:
    asking again writes nothing more but erases the message. A conversation's second reply,
    held by the relay behind the first (never queued), is failed too, and the failures never
    let the relay queue it (the newest first)."""
    customers = await customers_of(nc, store)
    number = f"+1555{int(uid, 16) % 10_000_000:07d}"
    ann = await customer(customers, f"phone:{number}")
    cid = f"cv_crash_{uid}"
    await _open(store, ann, cid, "sms", number, routed=False)
    first, held = _reply(ann, cid, f"rp_first_{uid}"), _reply(ann, cid, f"rp_held_{uid}")
    await store.append(Append(first))
    await store.append(Append(held))
    route = await reply_routing.reply_route(store, ann, cid)
    assert route is not None
    await reply_routing.queue(nc, reply_routing.deliver_command(first, route))
    assert first.reply_id in await _queued(nc)

    async def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(unlink_replies, "_erase_queued", crash)
    with pytest.raises(RuntimeError):
        await unlink(customers, ann, f"sms:{number}", "operator")
    monkeypatch.undo()
    assert first.reply_id in await _queued(nc)  # on the log as failed, still queued

    answer = await unlink(customers, ann, f"sms:{number}", "operator")
    assert (answer["already_unlinked"], answer["replies_withdrawn"]) == (True, 0), answer
    assert first.reply_id not in await _queued(nc)
    log = await store.read(subjects.conversation(ann, cid))
    events = [stored.event for stored in log]
    assert len(_failures(events, first.reply_id)) == len(_failures(events, held.reply_id)) == 1
    # The relay's fold, event by event: no failure let the held reply go, none is left waiting.
    pending = PendingReplies()
    for stored in log:
        pending.apply(stored)
        assert not pending.released.is_set(), stored.event
    assert pending.by_id == {}
