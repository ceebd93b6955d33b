"""A Freshdesk ticket create whose answer never came is not sent again blind.

Freshdesk has no idempotency key, and its search index lags by minutes: the create was retried
by the API client after a timeout (or the event tried again, the search finding nothing yet),
and a ticket Freshdesk had stored got a twin. The create is now sent once, marked beforehand;
the next try lists the requester's tickets updated since (a database read) and takes the one
tagged for the conversation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from services.sinks.conformance.fake import FakeTicket
from services.sinks.conformance.rig import eventually
from services.sinks.freshdesk import FreshdeskSink

from .freshdesk_fake import FakeFreshdesk, freshdesk_config
from .test_sink_failure_modes import make_rig

pytestmark = pytest.mark.integration


class StoredThenLate(FakeFreshdesk):
    """The first create is stored, then answered after the client gave up (api_timeout 0.5 s)."""

    creates = 0

    async def _create(self, request: web.Request) -> web.Response:
        self.creates += 1
        answer = await super()._create(request)
        if self.creates == 1:
            await asyncio.sleep(2)
        return answer


class LostFirst(FakeFreshdesk):
    """The first create never reaches the database: a 502 from Freshdesk's front."""

    creates = 0

    async def _create(self, request: web.Request) -> web.Response:
        self.creates += 1
        if self.creates == 1:
            return web.json_response({"code": "bad_gateway"}, status=502)
        return await super()._create(request)


async def linked_ticket(rig_fake: FakeFreshdesk, sink: FreshdeskSink, conversation: str) -> FakeTicket:
    async def probe() -> FakeTicket | None:
        link = await sink.state.link(conversation)
        return rig_fake.ticket_of(conversation) if link is not None else None

    ticket = await eventually(probe, timeout=20)
    link = await sink.state.link(conversation)
    assert link is not None and link.ticket_id == ticket.id
    return ticket


@pytest.mark.parametrize("fake_cls", [StoredThenLate, LostFirst])
async def test_a_ticket_create_tried_again_makes_one_ticket(tmp_path: Path, fake_cls: type[FakeFreshdesk]) -> None:
    fake = fake_cls()
    async with make_rig(tmp_path, fake, FreshdeskSink, freshdesk_config) as rig:
        customer, conversation = await rig.open_assigned("My invoice is wrong")
        sink = rig.sink
        assert isinstance(sink, FreshdeskSink)
        ticket = await linked_ticket(fake, sink, conversation)
        await rig.message(customer, conversation, "Any news?")
        await rig.caught_up(customer, timeout=20)
        assert len(fake.tickets) == 1, f"{len(fake.tickets)} tickets for one conversation"
        assert isinstance(fake, StoredThenLate | LostFirst)
        assert fake.creates == (2 if isinstance(fake, LostFirst) else 1)
        # The first message is the ticket's description, not a note as well; the next one a note.
        assert [c.body for c in ticket.comments] == ["My invoice is wrong", "Any news?"]
