"""Logs for the API view's tests: many conversations and agents written straight to the log
(pipelined), and the fold of the log the tests compare the API's view with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from events.model import (
    AgentOffered,
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    ConversationOpened,
    ConversationResolved,
    DecisionReason,
    LogEvent,
    OfferAccepted,
    Requirements,
    RoutingRequested,
)
from events.store import Append, EventStore
from router.fold import evolve
from router.state import RouterState

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def agents(n: int) -> list[LogEvent]:
    out: list[LogEvent] = []
    for i in range(n):
        aid = f"ag{i}"
        profile = AgentProfile(name=aid, skills={"billing": 3}, languages={"en": 5}, capacity={"sms": 1000})
        out.append(AgentProfileUpdated(at=T0, agent_id=aid, profile=profile))
        out.append(AgentStatusChanged(at=T0, agent_id=aid, status="available"))
    return out


def conversation(tag: str, i: int, n_agents: int) -> list[LogEvent]:
    """Five events (opened, routed, offered, accepted, resolved), the last one for every other
    conversation only: some end assigned, some resolved, some still offered."""
    cid, cust, aid = f"cv-{tag}-{i}", f"cu-{tag}-{i}", f"ag{i % n_agents}"
    at = T0 + timedelta(seconds=i)
    reason = DecisionReason(rule="test")
    out: list[LogEvent] = [
        ConversationOpened(at=at, customer_id=cust, conversation_id=cid, channel="sms", contact="+15550000000"),
        RoutingRequested(at=at, customer_id=cust, conversation_id=cid, channel="sms", requirements=Requirements()),
        AgentOffered(
            at=at,
            customer_id=cust,
            conversation_id=cid,
            agent_id=aid,
            expires_at=at + timedelta(hours=1),
            reason=reason,
        ),
    ]
    if i % 3 != 2:
        out.append(OfferAccepted(at=at, customer_id=cust, conversation_id=cid, agent_id=aid))
    if i % 3 == 0:
        out.append(ConversationResolved(at=at, customer_id=cust, conversation_id=cid, agent_id=aid))
    return out


async def write(store: EventStore, events: list[LogEvent]) -> int:
    """Append in order, pipelined; returns the last sequence."""
    await store.append_many([Append(e) for e in events])
    return await store.last_seq()


async def write_conversations(store: EventStore, tag: str, count: int, n_agents: int, start: int = 0) -> int:
    events: list[LogEvent] = []
    for i in range(start, start + count):
        events.extend(conversation(tag, i, n_agents))
    return await write(store, events)


async def fold_of_log(store: EventStore) -> RouterState:
    state = RouterState()
    async for batch in store.replay():
        for stored in batch:
            state = evolve(state, stored.seq, stored.subject, stored.event)
    return state


def picture(state: RouterState) -> dict[str, Any]:
    """What ``GET /v1/conversations`` and ``GET /v1/agents`` show, compared as facts."""
    return {
        "conversations": {cid: (c.status, c.agent_id) for cid, c in state.conversations.items()},
        "agents": {aid: (a.status, dict(a.load), sorted(a.holding)) for aid, a in state.agents.items()},
    }
