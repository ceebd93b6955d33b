"""A web chat conversation resolved by an unlink gets no closing notice. Before, the API queued
its ``DeliverReply`` (``notice="resolved"``) on ``rd.out.chat`` like any resolution's, so the
chat connector could store a ``closed`` frame ("the conversation ended") in the visitor id's
history after the unlink had taken the customer's frames out of it, and the id's next holder
saw it. Now the unlink marks its resolution (``address_unlinked``) and the API says nothing of
it; an agent's resolution of another visitor's chat still gets its notice. Over a real
nats-server: the whole system in-process, no chat connector, so a queued notice stays in
``RD_OUTBOUND`` to be seen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import decode_reply
from events.model import ConversationResolved, CustomerCreated, DeliverReply
from events.msg_get import stored_messages
from events.store import Append
from services.api.closings import notice_id
from services.bus.embedded import EmbeddedNats
from tests.agents.helpers import API_TOKEN, AgentSystem, agent_system, agents_config, eventually, ok
from tests.customers.test_unlink_conversations import _open

pytestmark = pytest.mark.integration

ANNS, CYS = "visitor-ann-41", "visitor-cy-42"


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as system:
        yield system


async def _notices(nc: NATS) -> dict[str, DeliverReply]:
    """reply id -> every closing notice waiting in RD_OUTBOUND (nothing takes ``rd.out.chat``)."""
    found = {}
    async for _, data in stored_messages(nc.jetstream(), subjects.OUTBOUND_STREAM, subjects.OUTBOUND_ALL):
        reply = decode_reply(data)
        if reply.notice:
            found[reply.reply_id] = reply
    return found


async def test_a_chat_resolved_by_an_unlink_gets_no_closing_notice_and_an_agents_still_does(
    s: AgentSystem, log_lines: list[dict[str, Any]]
) -> None:
    ava, _ = await s.issue_token("ava")
    ann, cy = "cu_unlinkclosing", "cu_keepsclosing"
    now = datetime.now(UTC)
    await s.store.append(Append(CustomerCreated(at=now, customer_id=ann, identity=f"chat:{ANNS}")))
    await s.store.append(Append(CustomerCreated(at=now, customer_id=cy, identity=f"chat:{CYS}")))
    on_ann, on_cy = "cv_closing_ann", "cv_closing_cy"
    await _open(s.store, ann, on_ann, "chat", ANNS, routed=False)
    await _open(s.store, cy, on_cy, "chat", CYS)
    await s.offered_to(on_cy, "ava")
    await ok(s, "POST", f"/v1/conversations/{on_cy}/accept", ava)
    await eventually(lambda: s.conversation(on_ann))

    status, body = await s.call("DELETE", f"/v1/customers/{ann}/identities/chat:{ANNS}", API_TOKEN)
    assert status == 200, body
    assert body["conversations_resolved"] == 1, body
    [resolution] = [
        e.event
        for e in await s.log(ann)
        if isinstance(e.event, ConversationResolved) and e.event.conversation_id == on_ann
    ]
    assert (resolution.actor, resolution.address_unlinked, resolution.erased) == ("operator", True, False)

    # Ava resolves Cy's chat after the unlink: its notice is queued as before. The API sweeps
    # resolutions in log order, so once it is queued the unlink's has been decided too.
    await ok(s, "POST", f"/v1/conversations/{on_cy}/resolve", ava)
    nc = s.store.nc
    notices = await eventually(lambda: _has(nc, notice_id(on_cy)), timeout=20)
    mine = notices[notice_id(on_cy)]
    assert (mine.conversation_id, mine.channel, mine.notice) == (on_cy, "chat", "resolved")
    assert notice_id(on_ann) not in notices
    assert [n.conversation_id for n in notices.values()] == [on_cy]

    # Said why, by ids: never the address in clear.
    skipped = [line for line in log_lines if line["event"] == "closing.notice_skipped"]
    assert [line["conversation_id"] for line in skipped] == [on_ann]
    assert "unlink" in skipped[0]["reason"]
    assert ANNS not in repr(skipped)
    queued = {line["conversation_id"] for line in log_lines if line["event"] == "closing.notice_queued"}
    assert queued == {on_cy}


async def _has(nc: NATS, reply_id: str) -> dict[str, DeliverReply] | None:
    notices = await _notices(nc)
    return notices if reply_id in notices else None


async def test_a_closing_notice_queued_just_before_the_unlink_is_taken_back(s: AgentSystem) -> None:
    """An agent resolved the visitor's chat just before the unlink: its closing notice waited in
    ``RD_OUTBOUND`` and, once delivered, stored "the conversation ended" in the visitor id's
    history after the unlink had purged it, for the id's next holder to see. The unlink erases
    the notices queued for the conversations on the address; another visitor's stays."""
    ava, _ = await s.issue_token("ava")
    ann, cy = "cu_unlinklate", "cu_keepslate"
    now = datetime.now(UTC)
    await s.store.append(Append(CustomerCreated(at=now, customer_id=ann, identity=f"chat:{ANNS}")))
    await s.store.append(Append(CustomerCreated(at=now, customer_id=cy, identity=f"chat:{CYS}")))
    on_ann, on_cy = "cv_late_ann", "cv_late_cy"
    for customer, cid, visitor in ((ann, on_ann, ANNS), (cy, on_cy, CYS)):
        await _open(s.store, customer, cid, "chat", visitor)
        await s.offered_to(cid, "ava")
        await ok(s, "POST", f"/v1/conversations/{cid}/accept", ava)
        await ok(s, "POST", f"/v1/conversations/{cid}/resolve", ava)
    nc = s.store.nc

    async def both_queued() -> dict[str, DeliverReply] | None:
        notices = await _notices(nc)
        return notices if {notice_id(on_ann), notice_id(on_cy)} <= notices.keys() else None

    await eventually(both_queued, timeout=20)

    status, body = await s.call("DELETE", f"/v1/customers/{ann}/identities/chat:{ANNS}", API_TOKEN)
    assert status == 200, body
    notices = await _notices(nc)
    assert notice_id(on_ann) not in notices, "the notice would reach the address's next holder"
    assert notice_id(on_cy) in notices
