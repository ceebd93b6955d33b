"""A command on a conversation this API's view does not hold is answered without asking NATS to
search under every customer (``rd.evt.c.*.<id>``: the server walks every customer's subjects).
Found by a security audit: any agent token could make the server do so at will with made-up ids.
The view knows every conversation it has read (open ones, custody's, and those resolved
unassigned: services.api.known_conversations), and waits for the log's end instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
from aiohttp.test_utils import make_mocked_request

from events.model import ConversationResolved
from events.store import StoredEvent
from router.state import RouterState
from services.api.caught_up import LOG_END, subject_of
from services.api.custody import Custody
from services.api.known_conversations import ResolvedUnassigned
from services.api.readmodel import LiveState
from services.bus.embedded import EmbeddedNats

from .helpers import AgentSystem, eventually, holds, ok
from .test_view_catch_up import connected
from .view_log import agents, write, write_conversations

AT = datetime(2026, 12, 7, tzinfo=UTC)


@pytest.fixture
async def searches(clean_nats: EmbeddedNats) -> AsyncIterator[list[str]]:
    """The subjects every last-by-subject direct get on the log asked for, as the server saw them."""
    seen: list[str] = []
    nc = await nats.connect(clean_nats.url)

    async def note(msg: nats.aio.msg.Msg) -> None:
        seen.append(msg.subject.removeprefix("$JS.API.DIRECT.GET.RD_EVENTS."))

    await nc.subscribe("$JS.API.DIRECT.GET.RD_EVENTS.>", cb=note)
    await nc.flush()
    yield seen
    await nc.drain()


@pytest.mark.integration
async def test_made_up_and_resolved_unassigned_ids_are_answered_without_a_search(
    s: AgentSystem, searches: list[str]
) -> None:
    customer, cid = await s.open()
    await s.offered_to(cid, "ava")
    await ok(s, "POST", f"/v1/conversations/{cid}/resolve")  # resolved while only offered
    status, body = await s.call("POST", "/v1/conversations/cv_made_up/resolve")
    assert (status, body["error"]) == (404, "no conversation cv_made_up")
    status, body = await s.call("POST", f"/v1/conversations/{cid}/resolve")
    assert (status, body["conversation_status"]) == (409, "resolved")
    ava, _ = await s.issue_token("ava")
    status, _ = await s.call("POST", "/v1/conversations/cv_made_up_too/accept", ava)
    assert status in (403, 404)

    # The spy hears the exact reads (the first resolve's own subject), so its silence on searches counts.
    await eventually(holds(lambda: f"rd.evt.c.{customer}.{cid}" in searches))
    assert [subject for subject in searches if "*" in subject or ">" in subject] == []


def _stored(seq: int, event: object, customer: str = "cu1", cid: str = "cv1") -> StoredEvent:
    return StoredEvent(seq, f"rd.evt.c.{customer}.{cid}", event)  # type: ignore[arg-type]


def _resolved(cid: str, agent_id: str | None = None) -> ConversationResolved:
    return ConversationResolved(at=AT, customer_id="cu1", conversation_id=cid, agent_id=agent_id)


def test_the_fold_keeps_what_custody_does_not() -> None:
    custody = Custody()
    known = ResolvedUnassigned(custody, RouterState)
    for stored in (_stored(1, _resolved("cv1")), _stored(2, _resolved("cv2", "ava"), cid="cv2")):  # she held cv2
        custody.apply(stored)
        known.apply(stored)
    assert list(known.customer_of.values()) == ["cu1"]  # cv2 is custody's
    assert (known.customer("cv1"), known.customer("cv2"), known.customer("cv3")) == ("cu1", "cu1", None)
    again = ResolvedUnassigned(Custody(), RouterState)
    again.load(known.dump())
    assert again.customer("cv1") == "cu1"


def test_an_unknown_conversation_waits_for_the_log_end_where_the_view_knows_them_all() -> None:
    accept = make_mocked_request("POST", "/v1/conversations/cv1/accept", match_info={"id": "cv1"})
    assert subject_of(accept, lambda cid: None, search=False) == LOG_END
    assert subject_of(accept, lambda cid: "cu1", search=False) == "rd.evt.c.cu1.cv1"


@pytest.mark.integration
async def test_after_an_upgrade_the_fold_is_filled_from_what_the_routing_view_remembers(
    clean_nats: EmbeddedNats,
) -> None:
    """A snapshot from before the fold: the view did not read the resolutions before it, but each
    customer's resolved conversations are in the routing view (as digests): one look-up fills it."""
    async with connected(clean_nats) as (_, store):
        await write(store, agents(2))
        await write_conversations(store, "a", 5, 2)
        resolved = [e for e in await store.read("rd.evt.c.>") if isinstance(e.event, ConversationResolved)]
        assert resolved, "the log holds resolved conversations"
        older = LiveState(store)
        await older.start()
        await older.save_snapshot()  # a release without the fold
        await older.stop()

        upgraded, custody = LiveState(store), Custody()
        known = ResolvedUnassigned(custody, lambda: upgraded.state)
        # custody left empty here, so every answer below comes from the fill
        upgraded.add_fold(known.apply, name="resolved_unassigned", saved=known, needs_the_past=False)
        await upgraded.start()
        try:
            assert upgraded.snapshot_position > 0 and known.customer_of == {}  # nothing read before it
            for stored in resolved:
                assert known.customer(stored.event.conversation_id) == stored.event.customer_id
            assert known.customer("cv_made_up") is None
        finally:
            await upgraded.stop()
