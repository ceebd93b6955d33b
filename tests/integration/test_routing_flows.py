"""Issue 3's routing flows over a real nats-server, with the router runner's clock under
the test's control (offer expiry and escalation waits pass without sleeping)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import nats
import pytest

from events import subjects
from events.model import (
    AgentOffered,
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    ConversationResolved,
    ConversationTransferred,
    CustomerProfileUpdated,
    EscalationStepReached,
    LogEvent,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    RoutingRequested,
)
from events.store import Append, EventStore, StoredEvent
from events.streams import ensure_streams
from router.policy import RouterPolicy
from services.bootstrap import seed_agents
from services.bus.embedded import EmbeddedNats
from services.config import Config
from services.router_runner import RouterRunner
from tests.integration.system import eventually, open_conversation

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def move_to(self, when: datetime) -> None:
        self.now = max(self.now, when)


class Flow:
    """The log, a router with a controllable clock, and the actions agents would take."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def events(self, conversation: str) -> list[StoredEvent]:
        return [e for e in await self.store.read() if getattr(e.event, "conversation_id", None) == conversation]

    async def offers(self, conversation: str) -> list[AgentOffered]:
        return [e.event for e in await self.events(conversation) if isinstance(e.event, AgentOffered)]

    async def next_offer(self, conversation: str, after: int = 0) -> AgentOffered:
        async def probe() -> AgentOffered | None:
            offers = await self.offers(conversation)
            return offers[after] if len(offers) > after else None

        return await eventually(probe)

    async def act(self, customer: str, conversation: str, event: LogEvent) -> None:
        subject = subjects.conversation(customer, conversation)
        await self.store.append(Append(event, expected=await self.store.last_subject_seq(subject)))

    async def waited(self, conversation: str, seconds: float) -> None:
        """The clock moved to ``seconds`` after the conversation began waiting: its routing
        request's ``at`` (the wall clock when it was written), not the router's clock, which
        starts before the router does: a router slow to take its lease on a loaded machine
        left the wait short of an escalation step counted from the router's start."""
        requested = [e.event for e in await self.events(conversation) if isinstance(e.event, RoutingRequested)]
        self.clock.move_to(requested[0].at + timedelta(seconds=seconds))

    async def agent_status(self, agent: str, status: str) -> None:
        await self.store.append(Append(AgentStatusChanged(at=self.clock(), agent_id=agent, status=status)))  # type: ignore[arg-type]

    async def profile(self, customer: str, **fields: object) -> None:
        await self.store.append(Append(CustomerProfileUpdated(at=self.clock(), customer_id=customer, **fields)))  # type: ignore[arg-type]

    async def accept(self, customer: str, conversation: str, agent: str) -> None:
        event = OfferAccepted(at=self.clock(), customer_id=customer, conversation_id=conversation, agent_id=agent)
        await self.act(customer, conversation, event)

    async def resolve(self, customer: str, conversation: str, agent: str) -> None:
        event = ConversationResolved(
            at=self.clock(), customer_id=customer, conversation_id=conversation, agent_id=agent
        )
        await self.act(customer, conversation, event)


@contextlib.asynccontextmanager
async def flow_with_router(clean_nats: EmbeddedNats, policy: RouterPolicy | None = None) -> AsyncIterator[Flow]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    store = EventStore(nc, nc.jetstream())
    await seed_agents(store, Config())  # ava (billing, en), bruno (billing, es+en), chen (technical specialist)
    clock = Clock()
    runner = RouterRunner(nc, policy or RouterPolicy(), clock=clock, tick=0.05, lease_ttl=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.leading.wait(), 10)
        yield Flow(store, clock)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await nc.drain()


async def test_declined_offer_is_offered_again_to_another_agent(clean_nats: EmbeddedNats) -> None:
    async with flow_with_router(clean_nats) as flow:
        await open_conversation(flow.store, "cu1", "cv1", skills={"billing": 1}, language="en")
        first = await flow.next_offer("cv1")
        await flow.act(
            "cu1",
            "cv1",
            OfferDeclined(at=flow.clock(), customer_id="cu1", conversation_id="cv1", agent_id=first.agent_id),
        )
        second = await flow.next_offer("cv1", after=1)
    assert second.agent_id != first.agent_id
    assert {first.agent_id, second.agent_id} <= {"ava", "bruno", "chen"}


async def test_an_offer_expires_and_goes_to_someone_else(clean_nats: EmbeddedNats) -> None:
    async with flow_with_router(clean_nats) as flow:
        await open_conversation(flow.store, "cu1", "cv1", skills={"billing": 1}, language="en")
        first = await flow.next_offer("cv1")
        flow.clock.advance(31)  # past offer_timeout_seconds (30)
        second = await flow.next_offer("cv1", after=1)
        kinds = [type(e.event) for e in await flow.events("cv1")]
    assert OfferExpired in kinds
    assert second.agent_id != first.agent_id


async def test_escalation_step_reached_after_its_wait(clean_nats: EmbeddedNats) -> None:
    # Technical help in Spanish: nobody speaks Spanish with the technical skill. After the
    # fallback-language step (60 s) the English technical specialist gets it.
    async with flow_with_router(clean_nats) as flow:
        await open_conversation(flow.store, "cu1", "cv1", skills={"technical": 1}, language="es")
        await asyncio.sleep(0.3)
        assert await flow.offers("cv1") == []
        await flow.waited("cv1", 61)
        offer = await flow.next_offer("cv1")
        steps = [e.event for e in await flow.events("cv1") if isinstance(e.event, EscalationStepReached)]
    assert offer.agent_id == "chen"
    assert "fallback_language" in [s.relaxation for s in steps]
    assert offer.reason.step >= 1


async def test_third_transfer_lands_with_a_specialist(clean_nats: EmbeddedNats) -> None:
    async with flow_with_router(clean_nats) as flow:
        await open_conversation(flow.store, "cu1", "cv1", skills={"billing": 1}, language="en")
        holder = (await flow.next_offer("cv1")).agent_id
        await flow.accept("cu1", "cv1", holder)
        frontline = {"ava", "bruno"}
        for count in (1, 2):
            target = next(iter(frontline - {holder}))
            await flow.act(
                "cu1",
                "cv1",
                ConversationTransferred(
                    at=flow.clock(),
                    customer_id="cu1",
                    conversation_id="cv1",
                    from_agent=holder,
                    to_agent=target,
                    transfer_count=count,
                ),
            )
            holder = (await flow.next_offer("cv1", after=count)).agent_id
            assert holder == target
            await flow.accept("cu1", "cv1", holder)
        await flow.act(
            "cu1",
            "cv1",
            ConversationTransferred(
                at=flow.clock(),
                customer_id="cu1",
                conversation_id="cv1",
                from_agent=holder,
                to_skill="billing",
                transfer_count=3,
            ),
        )
        third = await flow.next_offer("cv1", after=3)
    assert third.agent_id == "chen"  # the only tier-2 agent


async def test_flagged_and_platinum_customers_jump_the_queue(clean_nats: EmbeddedNats) -> None:
    async with flow_with_router(clean_nats) as flow:
        for agent in ("ava", "bruno", "chen"):
            await flow.agent_status(agent, "offline")
        for n in ("a", "b"):
            await open_conversation(flow.store, f"cu{n}", f"cv{n}", skills={"billing": 1}, language="en")
        await open_conversation(flow.store, "cup", "cvp", skills={"billing": 1}, language="en")
        await flow.profile("cup", tier="platinum")
        await open_conversation(flow.store, "cum", "cvm", skills={"billing": 1}, language="en")
        await flow.profile("cum", flags=("media_attention",))
        await asyncio.sleep(0.3)
        # Chen (specialist) comes on shift with room for one SMS at a time.
        profile = AgentProfile(name="Chen", skills={"billing": 3}, languages={"en": 5}, tier=2, capacity={"sms": 1})
        await flow.store.append(Append(AgentProfileUpdated(at=flow.clock(), agent_id="chen", profile=profile)))
        await flow.agent_status("chen", "available")
        first = await flow.next_offer("cvm")  # media attention: top priority
        assert first.agent_id == "chen"
        assert await flow.offers("cvp") == [] and await flow.offers("cva") == []
        await flow.accept("cum", "cvm", "chen")
        await flow.resolve("cum", "cvm", "chen")
        second = await flow.next_offer("cvp")  # platinum before the standard ones
        assert second.agent_id == "chen"
        assert await flow.offers("cva") == [] and await flow.offers("cvb") == []


async def test_returning_customer_goes_back_to_the_case_owner(clean_nats: EmbeddedNats) -> None:
    async with flow_with_router(clean_nats) as flow:
        await flow.agent_status("ava", "offline")
        await open_conversation(flow.store, "cu1", "cv1", skills={"billing": 1}, language="en")
        first = await flow.next_offer("cv1")
        assert first.agent_id == "bruno"
        await flow.accept("cu1", "cv1", "bruno")
        await flow.resolve("cu1", "cv1", "bruno")
        await flow.agent_status("ava", "available")  # ava is idle and equally able
        await open_conversation(flow.store, "cu1", "cv2", skills={"billing": 1}, language="en")
        again = await flow.next_offer("cv2")
    assert again.agent_id == "bruno"
    assert again.reason.rule == "case_owner"
