"""Later messages correct a conversation's language, over a real nats-server: real intake
(``Intake.handle_message``) and the router runner (its clock held still: no escalation step
relaxes the language while the test runs)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
import pytest

from events import subjects
from events.model import (
    AgentOffered,
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    ConversationLanguageChanged,
    InboundMessage,
    OfferAccepted,
    RoutingRequested,
)
from events.store import Append, EventStore
from events.streams import ensure_streams
from router.policy import RouterPolicy
from services.bus.embedded import EmbeddedNats
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.intake import Intake
from services.router_runner import RouterRunner
from tests.integration.system import eventually

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


@dataclass
class Desk:
    store: EventStore
    intake: Intake
    phone: str

    async def sms(self, text: str) -> str:
        message = InboundMessage(
            at=datetime.now(UTC), channel="sms", provider="twilio", provider_message_id="SM" + uuid.uuid4().hex,
            sender=self.phone, text=text,
        )  # fmt: skip
        conversation_id = await self.intake.handle_message(message)
        assert conversation_id is not None
        return conversation_id

    async def of_type(self, conversation_id: str, kind: type) -> list:  # type: ignore[type-arg]
        events = await self.store.read()
        return [e.event for e in events if isinstance(e.event, kind) and e.event.conversation_id == conversation_id]

    async def offer(self, conversation_id: str) -> AgentOffered:
        async def probe() -> AgentOffered | None:
            offers = await self.of_type(conversation_id, AgentOffered)
            return offers[-1] if offers else None

        return await eventually(probe)


@contextlib.asynccontextmanager
async def desk(server: EmbeddedNats, *agents: tuple[str, dict[str, int]]) -> AsyncIterator[Desk]:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    store = EventStore(nc, js)
    for agent_id, languages in agents:
        profile = AgentProfile(name=agent_id, skills={"billing": 3, "general": 3}, languages=languages, tier=1)
        await store.append(Append(AgentProfileUpdated(at=NOW, agent_id=agent_id, profile=profile)))
        await store.append(Append(AgentStatusChanged(at=NOW, agent_id=agent_id, status="available")))
    intake = Intake(store, IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET)), IntakeSettings())
    runner = RouterRunner(nc, RouterPolicy(), clock=lambda: NOW, tick=0.05, lease_ttl=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.leading.wait(), 10)
        yield Desk(store, intake, f"+3491{uuid.uuid4().int % 10_000_000:07d}")  # a Spanish number
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await nc.drain()


async def test_a_waiting_conversation_is_rerouted_when_the_customer_writes_spanish(clean_nats: EmbeddedNats) -> None:
    # Only a Spanish-speaking agent is on: a conversation in English waits for someone.
    async with desk(clean_nats, ("sofia", {"es": 5})) as d:
        # "invoice" is English, and confidently so: the Spanish number does not outweigh it.
        conversation = await d.sms("hello, my invoice is wrong")
        [routing] = await d.of_type(conversation, RoutingRequested)
        assert routing.requirements.language == "en"
        assert {e.source for e in routing.language_reason.evidence} == {"text", "phone"}
        await asyncio.sleep(0.3)  # the router has seen it and found nobody (a bounded settle)
        assert await d.of_type(conversation, AgentOffered) == []

        await d.sms("perdon, mejor en espanol: me cobraron dos veces la factura")
        [change] = await d.of_type(conversation, ConversationLanguageChanged)
        assert (change.language, change.previous) == ("es", "en")
        assert change.reason is not None and change.reason.confidence > 0.9
        offer = await d.offer(conversation)
    assert offer.agent_id == "sofia"


async def test_an_assigned_conversation_keeps_its_agent(clean_nats: EmbeddedNats) -> None:
    # Ava took it in English; the customer switching to Spanish is recorded, not re-routed.
    async with desk(clean_nats, ("ava", {"en": 5}), ("sofia", {"es": 5})) as d:
        conversation = await d.sms("hi, where is my order? it was due on monday")
        offer = await d.offer(conversation)
        assert offer.agent_id == "ava"
        subject = subjects.conversation(offer.customer_id, conversation)
        accepted = OfferAccepted(at=NOW, customer_id=offer.customer_id, conversation_id=conversation, agent_id="ava")
        await d.store.append(Append(accepted, expected=await d.store.last_subject_seq(subject)))

        await d.sms("donde esta mi pedido? no ha llegado todavia")
        [change] = await d.of_type(conversation, ConversationLanguageChanged)
        assert change.language == "es"
        await asyncio.sleep(0.3)  # would the router offer it again? (a bounded settle)
        offers = await d.of_type(conversation, AgentOffered)
    assert [o.agent_id for o in offers] == ["ava"]


async def test_the_readme_example_is_offered_to_the_spanish_agent(clean_nats: EmbeddedNats) -> None:
    # README "Try it": a US number writes "Hola, necesito un reembolso" (py3langid alone: 0.47
    # Spanish, under the old 0.6 threshold, so English and Ava).
    async with desk(clean_nats, ("ava", {"en": 5}), ("bruno", {"es": 5, "en": 4})) as d:
        d.phone = "+15551234567"
        conversation = await d.sms("Hola, necesito un reembolso")
        [routing] = await d.of_type(conversation, RoutingRequested)
        offer = await d.offer(conversation)
    assert routing.requirements.language == "es"
    assert offer.agent_id == "bruno"
