"""Two replicas of one helpdesk sink (``replicas: 2``): a ticket is created once, however long
the helpdesk takes to answer.

The leader renewed its lease between events only. A ticket create the helpdesk answered after
the lease's time to live (Freshdesk slow; ``api_timeout`` 15 s against ``lease_seconds`` 10 s
by default) let the standby take the lease and handle the same assignment: the search found
no ticket yet, and it created a second one for the conversation."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from aiohttp import web

from connectors.sdk.conformance.helpers import conformance_nats
from services.bootstrap import event_store
from services.sinks.conformance.kit import KIT_SETTINGS
from services.sinks.conformance.rig import Rig, eventually
from services.sinks.freshdesk import FreshdeskSink
from services.sinks.sdk import SinkRuntime

from .freshdesk_fake import FakeFreshdesk, freshdesk_config

pytestmark = pytest.mark.integration

LEASE_S = 1.0
CREATE_S = 3 * LEASE_S  # the helpdesk's answer to a ticket create: three lease periods


class SlowCreate(FakeFreshdesk):
    creates = 0

    async def _create(self, request: web.Request) -> web.Response:
        self.creates += 1
        await asyncio.sleep(CREATE_S)  # stored only once answered, as a slow helpdesk does
        return await super()._create(request)


async def test_two_replicas_of_a_sink_create_one_ticket_when_the_helpdesk_is_slow(tmp_path: Any) -> None:
    fake = SlowCreate()
    async with conformance_nats(tmp_path) as (server, nc):
        api = await fake.start()
        settings = {**freshdesk_config(api), **KIT_SETTINGS, "lease_seconds": LEASE_S, "api_timeout": 10.0}
        other = await nats.connect(server.url)
        first = SinkRuntime(FreshdeskSink.from_config(settings), nc, event_store(nc))
        second = SinkRuntime(FreshdeskSink.from_config(settings), other, event_store(other))
        try:
            await first.start()

            async def first_leads() -> bool:
                return first.role == "leader"

            assert await eventually(first_leads)
            await second.start()
            rig = Rig(nc, event_store(nc), fake, first, lambda: FreshdeskSink.from_config(settings))
            customer, conversation = await rig.open_assigned("My invoice is wrong")

            async def ticket_made() -> bool:
                return fake.ticket_of(conversation) is not None

            assert await eventually(ticket_made, timeout=30)
            await rig.caught_up(customer, timeout=30)  # both runtimes' work on it done or passed
            assert fake.creates == 1, f"{fake.creates} ticket creates for one conversation"
            assert len(fake.tickets) == 1
            assert {first.role, second.role} == {"leader", "standby"}
        finally:
            await second.stop()
            await first.stop()
            await other.close()
            await fake.stop()
