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
