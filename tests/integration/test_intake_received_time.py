"""Intake over a real nats-server dates a message by when JetStream stored it, not by a time
its connector passed on (an SDK connector handing over its provider's 1970 or 2099)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import nats
import pytest
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import encode
from events.model import InboundMessage, MessageReceived
from events.store import EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.identity.addresses import identity_for
from services.intake import Intake, register
from tests.integration.system import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def private(clean_nats: EmbeddedNats) -> AsyncIterator[tuple[str, NATS, EventStore]]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    yield clean_nats.url, nc, EventStore(nc, nc.jetstream())
    await nc.drain()


@pytest.mark.parametrize("claimed", [datetime(1970, 1, 1, tzinfo=UTC), datetime(2099, 12, 31, tzinfo=UTC)])
async def test_a_providers_time_passed_on_as_at_does_not_date_the_message(
    private: tuple[str, NATS, EventStore], uid: str, claimed: datetime
) -> None:
    nats_url, nc, store = private
    js = nc.jetstream()
    directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
    broker = NatsBroker(nats_url)
    register(broker, Intake(store, directory, IntakeSettings()))
    phone = f"+1555{int(uid[:7], 16) % 10_000_000:07d}"
    message = InboundMessage(
        at=claimed, channel="sms", provider="twilio", provider_message_id=f"SM{uid}", sender=phone, text="hello"
    )
    before = datetime.now(UTC)
    async with broker:
        await broker.start()
        await js.publish(subjects.inbound("sms"), encode(message), headers={"Nats-Msg-Id": f"sms:SM{uid}"})

        async def received() -> MessageReceived | None:
            customer_id = await directory.lookup(identity_for("sms", phone))
            if customer_id is None:
                return None
            found = [e.event for e in await store.read_customer(customer_id) if isinstance(e.event, MessageReceived)]
            return found[0] if found else None

        event = await eventually(received)
    after = datetime.now(UTC)
    # When JetStream stored it (the test's clock and the server's are this machine's).
    assert before - timedelta(seconds=1) <= event.at <= after, event.at
