"""Deactivating and reactivating agents (``AgentDeactivated`` / ``AgentReactivated``).

A deactivated agent leaves the routing index like an agent going offline, and is kept
offline until reactivated: status changes meanwhile are ignored (the fold records nothing
for them), so she is never offered or assigned work and no hold waits for her. Everything
she holds is handed back by decide (``ConversationReleased``, reason ``agent_deactivated``),
on every channel: unlike an agent going offline, she is not expected back to finish her
email. Her profile, and the history on her subject, are kept. Reactivation makes her
active again with the same profile and status ``offline``: she comes back to work by
setting herself available, like after a shift.
"""

from __future__ import annotations

from router import index
from router.state import AgentView, RouterState

DEACTIVATED_REASON = "agent_deactivated"


def deactivate(state: RouterState, agent_id: str, agent: AgentView) -> None:
    if not agent.active:
        return
    index.agent_leaving(state, agent_id, agent)
    agent.active = False
    agent.status = "offline"
    agent.expired_in_a_row = 0
    index.agent_changed(state, agent_id, agent, roster=True)
    index.streak_changed(state, agent_id, agent)
    index.status_changed(state, agent_id, agent)  # her holdings are handed back, holds for her end


def reactivate(state: RouterState, agent_id: str, agent: AgentView) -> None:
    """Active again, still offline (her profile is kept; see the module's docstring)."""
    if agent.active:
        return
    agent.active = True
    index.holds_changed(state, agent_id)


def took_work(state: RouterState, conversation_id: str, agent: AgentView) -> None:
    """Work given to a deactivated agent anyway (an operator's assignment): handed back too."""
    if not agent.active:
        state.release_pending.add(conversation_id)
        state.pending.releases.add(conversation_id)
