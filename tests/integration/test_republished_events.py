"""Events re-published onto a real log after the fact (new ``Nats-Msg-Id``, so JetStream keeps
them: an operator's botched partial restore, a replay tool run twice): the router does not route
the resolved conversation again, live or replaying, and the folds of the log (the API's view,
reports, the timelines' summaries) count each event once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from events import subjects
from events.model import AgentOffered, ConversationAssigned, ConversationResolved
from events.store import Append, EventStore
from router.fold import evolve
from router.policy import RouterPolicy
from router.state import RouterState, reading_only
from services.bus.embedded import EmbeddedNats
from services.reports import fold_all
from services.router_runner import RouterRunner
from services.timelines.fold import fold_batch
from tests.integration.system import eventually, open_conversation
from tests.integration.test_router_runner import running_router

pytestmark = pytest.mark.integration


@pytest.fixture
def store(seeded_store: EventStore) -> EventStore:
    return seeded_store


async def _decisions(store: EventStore) -> list:  # type: ignore[type-arg]
    return [e for e in await store.read() if isinstance(e.event, AgentOffered | ConversationAssigned)]


async def test_a_resolved_conversation_republished_is_not_routed_again(
    clean_nats: EmbeddedNats, store: EventStore
) -> None:
    subject = subjects.conversation("cu1", "cv1")
    async with running_router(clean_nats.url, RouterPolicy()) as live:
        await open_conversation(store, "cu1", "cv1", channel="email")
        [assigned] = await eventually(lambda: _found(_decisions(store)))
        agent = assigned.event.agent_id
        await store.append(
            Append(ConversationResolved(at=datetime.now(UTC), customer_id="cu1", conversation_id="cv1", agent_id=agent))
        )
        history = await store.read(subject)
        # Re-published in order, each with a new message id: the duplicate window does not catch them.
        for stored in history[:-1]:
            await store.append(Append(stored.event))
        end = await store.last_seq()
        await _decided_on(live, end)
        # No new decision: the one made, and its re-published copy.
        assert [d.event for d in await _decisions(store)] == [assigned.event, assigned.event]
    async with running_router(clean_nats.url, RouterPolicy(), use_snapshot=False) as runner:
        await asyncio.wait_for(runner.ready.wait(), 10)
        end = await store.last_seq()
        await _decided_on(runner, end)
        assert runner.decisions_appended == 0
        assert "cv1" not in runner.state.conversations

    log = await store.read()
    assert len(await store.read(subject)) == 2 * len(history) - 1
    view = reading_only(RouterState())  # the API's view folds the log with the router's fold
    for stored in log:
        evolve(view, stored.seq, stored.subject, stored.event)
    assert "cv1" not in view.conversations
    assert view.agents[agent].load == {}

    facts = fold_all(log).conversations["cv1"]
    assert (facts.offers, facts.first_agent, facts.routable) == (0, agent, False)

    rows = fold_batch(log, lambda _key: None)
    summary = rows.summaries["cv1"]
    assert (summary.status, summary.message_count, summary.agent_id) == ("resolved", 1, agent)
    assert len(rows.entries) == len(history) and rows.repeats == len(history) - 1  # one entry per fact


async def _decided_on(runner: RouterRunner, end: int) -> None:
    """Wait until the router has run a whole decision round on the log up to ``end``."""
    seen: list[int] = []

    async def round_done() -> bool | None:
        if runner.round_seq >= end:
            seen.append(runner.rounds)
        return True if len(seen) > 1 and seen[-1] > seen[0] else None

    await eventually(round_done)


async def _found(probe):  # type: ignore[no-untyped-def]
    found = await probe
    return found or None
