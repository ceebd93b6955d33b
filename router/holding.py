"""Who holds a conversation: an agent's capacity taken by an offer or an assignment
(``take``) and freed when the agent lets go (``drop_holder``), and the agent's view they work
on, created on its first fact (``agent_view``).

Part of the fold (``router.fold``): it mutates the state it is given, and the fold calls these
directly (no layer between an event and them).
"""

from __future__ import annotations

from datetime import datetime

from router import index, lifecycle
from router.state import AgentView, ConversationView, RouterState


def agent_view(state: RouterState, agent_id: str) -> AgentView:
    found = state.agents.get(agent_id)
    if found is None:
        found = AgentView()
        state.agents[agent_id] = found
    return found


def take(state: RouterState, conversation_id: str, conv: ConversationView, agent_id: str, at: datetime) -> None:
    """``agent_id`` now holds the conversation (offer or assignment): capacity is taken."""
    if conv.status == "waiting":
        index.leave_queue(state, conversation_id, conv)
    drop_holder(state, conversation_id, conv)
    agent = agent_view(state, agent_id)
    before = index.load_changing(agent)
    agent.load[conv.channel] = agent.load.get(conv.channel, 0) + 1
    agent.holding.add(conversation_id)
    agent.last_work_at = at
    index.load_changed(state, agent_id, agent, before)
    conv.agent_id = agent_id
    lifecycle.took_work(state, conversation_id, agent)


def move_channel(state: RouterState, conversation_id: str, conv: ConversationView, channel: str) -> None:
    """The conversation is on ``channel`` now (a routing request or an opening naming another
    one). The slot its holder (if any) gives it moves with it: changed alone, the holder's
    load stayed on the old channel for good, and the slot freed at its end was taken from the
    new one (found by tests/unit/router/test_hostile_log.py)."""
    if channel == conv.channel:
        return
    agent_id = conv.agent_id
    agent = state.agents.get(agent_id) if agent_id is not None else None
    if agent_id is None or agent is None or conversation_id not in agent.holding:
        conv.channel = channel
        return
    _count(state, agent_id, agent, conv.channel, -1)
    conv.channel = channel
    _count(state, agent_id, agent, channel, 1)


def _count(state: RouterState, agent_id: str, agent: AgentView, channel: str, change: int) -> None:
    before = index.load_changing(agent)
    load = agent.load.get(channel, 0) + change
    if load > 0:
        agent.load[channel] = load
    else:
        agent.load.pop(channel, None)
    index.load_changed(state, agent_id, agent, before)


def drop_holder(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """The holding agent (if any) lets go: capacity is freed."""
    if conv.agent_id is None:
        return
    agent = state.agents.get(conv.agent_id)
    if agent is not None and conversation_id in agent.holding:
        before = index.load_changing(agent)
        agent.holding.discard(conversation_id)
        left = agent.load.get(conv.channel, 0) - 1
        if left > 0:
            agent.load[conv.channel] = left
        else:
            agent.load.pop(conv.channel, None)
        index.load_changed(state, conv.agent_id, agent, before)
    state.release_pending.discard(conversation_id)
    conv.agent_id = None
    conv.offer_expires_at = None
