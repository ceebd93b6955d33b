"""Intake over a real nats-server: inbound messages become customers and conversations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import encode
from events.model import ConversationOpened, CustomerCreated, InboundMessage, MessageReceived, RoutingRequested
from events.store import EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.identity.addresses import identity_for
from services.intake import Intake, register
from tests.connectors.intake_rig import intake_caught_up
from tests.integration.system import eventually

pytestmark = pytest.mark.integration


def inbound(sid: str, sender: str, text: str) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC), channel="sms", provider="twilio", provider_message_id=sid, sender=sender, text=text
    )


@pytest.fixture
async def private(clean_nats: EmbeddedNats) -> AsyncIterator[tuple[str, NATS, EventStore]]:
    """Intake's durable consumer takes everything on rd.inbound.>: a server of its own, so
    it neither eats other tests' messages nor waits behind them."""
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    yield clean_nats.url, nc, EventStore(nc, nc.jetstream())
    await nc.drain()


async def test_inbound_sms_becomes_a_routed_conversation_once(private: tuple[str, NATS, EventStore], uid: str) -> None:
    nats_url, nc, store = private
    js = nc.jetstream()
    directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
    broker = NatsBroker(nats_url)
    register(broker, Intake(store, directory, IntakeSettings()))
    phone = f"+1555{int(uid[:7], 16) % 10_000_000:07d}"
    async with broker:
        await broker.start()
        message = inbound(f"SM{uid}", phone, "Hola, necesito un reembolso de mi factura")
        # The same provider message published twice (a provider retry past the dedupe
        # window, or a redelivery) must still become one MessageReceived.
        await js.publish(subjects.inbound("sms"), encode(message), headers={"Nats-Msg-Id": f"sms:SM{uid}"})
        await js.publish(subjects.inbound("sms"), encode(message), headers={"Nats-Msg-Id": f"sms:SM{uid}:again"})

        async def customer() -> str | None:
            return await directory.lookup(identity_for("sms", phone))

        customer_id = await eventually(customer)

        async def routed():  # type: ignore[no-untyped-def]
            events = await store.read_customer(customer_id)
            return events if any(isinstance(e.event, RoutingRequested) for e in events) else None

        events = [e.event for e in await eventually(routed)]
        await intake_caught_up(nc)  # the second copy processed too
        events = [e.event for e in await store.read_customer(customer_id)]
    kinds = [type(e) for e in events]
    assert kinds == [CustomerCreated, ConversationOpened, MessageReceived, RoutingRequested]
    routing = events[-1]
    assert isinstance(routing, RoutingRequested)
    assert routing.requirements.language == "es"
    assert "billing" in routing.requirements.skills
    assert isinstance(events[2], MessageReceived) and events[2].text.startswith("Hola")


async def test_a_batch_from_one_customer_is_recorded_whole_once_each(private: tuple[str, NATS, EventStore]) -> None:
    # Providers batch (Meta sends up to 1000 updates per POST): many messages from one
    # person reach several intake workers at once.
    nats_url, nc, store = private
    js = nc.jetstream()
    directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
    broker = NatsBroker(nats_url)
    register(broker, Intake(store, directory, IntakeSettings()), workers=8)
    phone = "+15551230042"
    async with broker:
        await broker.start()
        for i in range(40):
            message = inbound(f"SMbatch{i:03d}", phone, f"message {i:03d}")
            await js.publish(subjects.inbound("sms"), encode(message), headers={"Nats-Msg-Id": f"sms:SMbatch{i:03d}"})

        async def all_recorded():  # type: ignore[no-untyped-def]
            customer_id = await directory.lookup(identity_for("sms", phone))
            if customer_id is None:
                return None
            events = await store.read_customer(customer_id)
            texts = [e.event.text for e in events if isinstance(e.event, MessageReceived)]
            return texts if len(texts) >= 40 else None

        texts = await eventually(all_recorded, timeout=30)
    assert sorted(texts) == [f"message {i:03d}" for i in range(40)]
    assert len(set(texts)) == 40
