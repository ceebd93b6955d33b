"""Intake for connector tests: connectors report reply outcomes on ``rd.inbound.<channel>``
and only intake writes them to the log, so a test that looks at the log runs intake too.

Intake's durable consumer takes everything on ``rd.inbound.>``: use it only on a nats-server
of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS

from events import subjects
from events.model import DeliverReply, ReplyRequested
from events.store import Append, EventStore
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.intake import Intake, register
from services.intake.settling import DURABLE


async def make_intake(nc: NATS) -> Intake:
    js = nc.jetstream()
    directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
    return Intake(EventStore(nc, js), directory, IntakeSettings())


@contextlib.asynccontextmanager
async def running_intake(nats_url: str, nc: NATS) -> AsyncIterator[Intake]:
    """Intake's consumer (``register``) running on ``nats_url`` until the block ends."""
    intake = await make_intake(nc)
    broker = NatsBroker(nats_url, logger=None, max_reconnect_attempts=-1, reconnect_time_wait=1)
    register(broker, intake, workers=2)
    async with broker:
        await broker.start()
        yield intake


async def request_reply(store: EventStore, reply: DeliverReply) -> int:
    """Append the ``ReplyRequested`` the API writes before queuing ``reply`` (intake records
    outcomes only for replies the log asked for)."""
    event = ReplyRequested(
        at=datetime.now(UTC),
        customer_id=reply.customer_id,
        conversation_id=reply.conversation_id,
        channel=reply.channel,
        reply_id=reply.reply_id,
        agent_id="ava",
        text=reply.text,
        actor="agent:ava",
    )
    return await store.append(Append(event))


async def intake_caught_up(nc: NATS, timeout: float = 15.0) -> None:
    """Return once intake's consumer has acknowledged everything on ``rd.inbound.>`` so far."""
    js = nc.jetstream()
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(subjects.INBOUND_STREAM, DURABLE)
            if not info.num_pending and not info.num_ack_pending:
                return
            await asyncio.sleep(0.05)
