"""Who may take a conversation after a transfer or an escalation (``redirect``), and the
agents it must not go to again (``exclude``, ``forgive``): the fold applies them, and the
API applies ``redirect`` to a copy to refuse a command nobody could take (``router.explain``)."""

from __future__ import annotations

import msgspec

from events.model import ConversationEscalated, ConversationTransferred, Requirements
from router.state import ConversationView


def redirect(conv: ConversationView, event: ConversationTransferred | ConversationEscalated) -> None:
    """What a transfer or an escalation changes in who may take ``conv``: the exclusions, the
    skills, the tier and the agent it waits for (the holder lets go in the fold). The API
    applies it to a copy to refuse a command nobody could take (``router.explain``)."""
    if isinstance(event, ConversationEscalated):
        conv.escalated_tier = max(conv.escalated_tier, event.to_tier)
        conv.preferred_agent = None
        conv.preferred_is_transfer = False
        return
    conv.transfer_count = max(conv.transfer_count + 1, event.transfer_count)
    away_from = event.from_agent or conv.agent_id
    if away_from is not None and away_from != event.to_agent:
        exclude(conv, away_from)
    if event.to_skill is not None:
        level = conv.requirements.skills.get(event.to_skill, 1)
        conv.requirements = _with_skills(conv, {event.to_skill: level})
    if event.to_tier is not None:
        conv.escalated_tier = max(conv.escalated_tier, event.to_tier)
    conv.preferred_agent = event.to_agent
    conv.preferred_is_transfer = event.to_agent is not None
    if event.to_agent is not None:
        _unexclude(conv, event.to_agent)


def _with_skills(conv: ConversationView, skills: dict[str, int]) -> Requirements:
    return msgspec.structs.replace(conv.requirements, skills=skills)


def exclude(conv: ConversationView, agent_id: str, *, declined: bool = False) -> None:
    """``declined``: excluded for declining or letting the offer expire (``forgive_declines``
    may lift it); otherwise by name (a transfer away), which nothing but a transfer to that
    agent lifts, even if the agent had declined before."""
    if agent_id not in conv.excluded:
        conv.excluded.append(agent_id)
        if declined:
            conv.declined.append(agent_id)
    elif not declined and agent_id in conv.declined:
        conv.declined.remove(agent_id)


def _unexclude(conv: ConversationView, agent_id: str) -> None:
    if agent_id in conv.excluded:
        conv.excluded.remove(agent_id)
    if agent_id in conv.declined:
        conv.declined.remove(agent_id)


def forgive(conv: ConversationView) -> None:
    """Exclusions from declines and expiries so far no longer apply (later ones count again)."""
    if conv.declined:
        forgiven = set(conv.declined)
        conv.excluded = [agent_id for agent_id in conv.excluded if agent_id not in forgiven]
        conv.declined = []
