"""A sink's bucket (``rd_sink_<name>``) no longer keeps for ever what stops counting (found by
the long-run audit: nothing in it had a TTL). A resolved conversation's link (``conv.*``,
``ticket.*``) lapses ``LINK_KEPT`` after the resolution, whoever resolved it, and a webhook about
its ticket is then ignored; an open conversation's link has no TTL. A body marker
(``posting.*``) lapses after ``OURS_TTL``, a removed key's marker after ``MARKER_TTL``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

from events.model import ConversationResolved
from services.sinks.conformance.rig import Rig, eventually
from services.sinks.sdk import state as sink_state
from services.sinks.sdk.state import LINK_KEPT, MARKER_TTL, OURS_TTL, ParkedEvent, body_hash
from services.sinks.zendesk import ZendeskSink

from .test_sink_failure_modes import make_rig
from .zendesk_fake import FakeZendesk, zendesk_config

pytestmark = pytest.mark.integration

GONE = "gone"


async def ttl_of(rig: Rig, key: str) -> str | None:
    """The Nats-TTL of what the bucket holds for ``key`` (a value or a marker); GONE if nothing."""
    bucket = rig.sink.state.bucket
    try:
        msg = await rig.nc.jetstream().get_last_msg(f"KV_{bucket}", f"$KV.{bucket}.{key}")
    except NotFoundError:
        return GONE
    return (msg.headers or {}).get("Nats-TTL")


async def resolve(rig: Rig, customer: str, conversation: str) -> None:
    await rig.append(
        ConversationResolved(
            at=datetime.now(UTC), customer_id=customer, conversation_id=conversation, agent_id="ava", actor="agent:ava"
        )
    )


async def test_a_resolved_conversations_link_lapses_and_an_open_ones_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeZendesk()
    async with make_rig(tmp_path, fake, ZendeskSink, zendesk_config) as rig:
        state = rig.sink.state
        kept, open_ = await rig.open_assigned("resolved here"), await rig.open_assigned("still open")
        await rig.caught_up(open_[0])
        await resolve(rig, *kept)
        await rig.caught_up(kept[0])
        ticket = fake.ticket_of(kept[1])
        assert ticket is not None and ticket.status == "solved"
        assert await ttl_of(rig, f"conv.{kept[1]}") == str(int(LINK_KEPT))
        assert await ttl_of(rig, f"ticket.{ticket.id}") == str(int(LINK_KEPT))
        still = await state.link(open_[1])
        assert still is not None
        assert await ttl_of(rig, f"conv.{open_[1]}") is None and await ttl_of(rig, f"ticket.{still.ticket_id}") is None

        # Solved in Zendesk (the sink's own resolution coming back): the link lapses too. Here
        # after a second, and a webhook about the ticket afterwards is no Relaydesk ticket's.
        monkeypatch.setattr(sink_state, "LINK_KEPT", 1.0)
        solved = fake.ticket_of(open_[1])
        assert solved is not None
        status, _ = await rig.post(fake.solve(solved))
        assert status == 200
        await eventually(lambda: rig.resolutions(open_[0]))

        async def lapsed() -> bool:
            return await ttl_of(rig, f"conv.{open_[1]}") == GONE and await ttl_of(rig, f"ticket.{solved.id}") == GONE

        await eventually(lapsed, timeout=15)
        status, answer = await rig.post(fake.agent_reply(solved, "a late comment"))
        assert status == 200 and answer == {"acted": False, "ignored": "not a Relaydesk ticket"}, answer


async def test_a_body_marker_and_a_removed_keys_marker_lapse(tmp_path: Path) -> None:
    async with make_rig(tmp_path, FakeZendesk(), ZendeskSink, zendesk_config) as rig:
        state = rig.sink.state
        await state.posting("77", "Hello")
        assert await ttl_of(rig, f"posting.77.{body_hash('Hello')}") is None  # in flight: until it returns
        await state.posted("77", "Hello", "501")
        assert await ttl_of(rig, f"posting.77.{body_hash('Hello')}") == str(int(OURS_TTL + 60))
        await state.park(ParkedEvent(seq=9, subject="rd.evt.x", type="T", error="e", parked_at=datetime.now(UTC)))
        await state.unpark(9)
        assert await ttl_of(rig, "parked.9") == str(int(MARKER_TTL))
