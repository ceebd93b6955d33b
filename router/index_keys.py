"""Index keys: where an agent is filed in the free-agent heaps, and where the work it might
take is filed in the queue lookup (see ``router.index``). Pure string and list work, cached
per agent profile beside the state (``state.__dict__``: caches, not facts, never snapshotted).
"""

from __future__ import annotations

import functools
import sys

from events.model import AgentProfile
from router.state import ANY, RELAXED, AgentView, QueueSignature, RouterState

MAX_LEVEL = 5


# --- keys ----------------------------------------------------------------------------


def agent_key(channel: str, skill: str, language: str, tier: int, level: int) -> str:
    return f"{channel}|{skill}|{language}|{tier}|{level}"


def lookup_key(channel: str, skill: str, language: str) -> str:
    return f"{channel}|{skill}|{language}"


def agent_skills(agent: AgentView) -> list[tuple[str, int]]:
    skills = [(name, min(level, MAX_LEVEL)) for name, level in agent.profile.skills.items() if level > 0]
    skills.append((ANY, 0))
    return skills


# Per channel: (index key, the agent's level in the key's language (0 under '*')).
ChannelKeys = dict[str, list[tuple[str, int]]]


def keys_by_channel(state: RouterState, agent_id: str, agent: AgentView) -> ChannelKeys:
    """The agent's index keys on every channel of its profile, worked out once per profile
    (a cache beside the state, like ``state.pending``: not a fact, not snapshotted)."""
    cache: dict[str, tuple[AgentProfile, ChannelKeys]] | None = state.__dict__.get("_agent_keys")
    if cache is None:
        cache = state.__dict__["_agent_keys"] = {}
    found = cache.get(agent_id)
    if found is not None and found[0] is agent.profile:
        return found[1]
    skills = agent_skills(agent)
    languages = [*agent.profile.languages.items(), (ANY, 0)]
    tier = agent.profile.tier
    # Interned: every agent with room under a key looks it up in the same few dicts
    # (``free_agents``, ``free_live``, ``capable``), which then find it by identity instead of
    # comparing it with another agent's copy (one string per key, not one per agent and key).
    by_channel: ChannelKeys = {
        channel: [
            (sys.intern(agent_key(channel, skill, language, tier, level)), language_level)
            for skill, level in skills
            for language, language_level in languages
        ]
        for channel in agent.profile.capacity
    }
    cache[agent_id] = (agent.profile, by_channel)
    return by_channel


def agent_lookup_keys(agent: AgentView, channel: str) -> list[str]:
    """The queue lookup keys under which work this agent might take is filed."""
    languages = [*agent.profile.languages, ANY, RELAXED]
    return [lookup_key(channel, skill, language) for skill, _ in agent_skills(agent) for language in languages]


Lookups = list[tuple[str, tuple[str, ...]]]


def agent_lookups(state: RouterState, agent_id: str, agent: AgentView, channel: str) -> Lookups:
    """Where work this agent might take is filed: (lookup key, the groups of it to look in).

    A queue is filed under its primary skill and, within that, in a group named by one other
    skill it requires and the primary skill's minimum level (see ``queue_group``): an agent
    looks only in the groups of skills it has, at levels it has, since work needing a skill it
    lacks is never its (no relaxation drops a skill, and only a step lowers a minimum).
    Worked out once per profile and channel (a cache beside the state, like ``keys_by_channel``)."""
    cache: dict[tuple[str, str], tuple[AgentProfile, Lookups]] | None = state.__dict__.get("_agent_lookups")
    if cache is None:
        cache = state.__dict__["_agent_lookups"] = {}
    found = cache.get((agent_id, channel))
    if found is not None and found[0] is agent.profile:
        return found[1]
    languages = [*agent.profile.languages, ANY, RELAXED]
    names = tuple(name for name, level in agent.profile.skills.items() if level > 0)
    out: Lookups = []
    for skill, level in agent_skills(agent):
        groups = _groups(skill, level, names)
        out.extend((lookup_key(channel, skill, language), groups) for language in languages)
    cache[(agent_id, channel)] = (agent.profile, out)
    return out


@functools.lru_cache(maxsize=4096)
def _groups(skill: str, level: int, skills: tuple[str, ...]) -> tuple[str, ...]:
    """The groups an agent with ``skills`` looks in under ``skill`` at ``level``: the same for
    every agent with those skills (after a restart each agent's first freed slot asks)."""
    if skill == ANY:
        return ("|0",)
    others = ("", *(name for name in skills if name != skill))
    return tuple(f"{other}|{floor}" for other in others for floor in range(1, level + 1))


def queue_group(sig: QueueSignature) -> str:
    """The group a queue is filed in under its primary skill's lookup: "<first other required
    skill by name, or ''>|<primary skill's minimum>". The minimum is the required one (1 to
    5) before any escalation step, and 1 after one (a step may lower it); 0 for no skill."""
    primary, level = sig.primary_skill()
    second = next((name for name, _ in sig.skills if name != primary), "")
    if primary == ANY:
        return f"{second}|0"
    return f"{second}|{min(max(level, 1), MAX_LEVEL) if sig.step == 0 else 1}"


def capable_channels(agent: AgentView) -> list[str]:
    return [channel for channel, slots in agent.profile.capacity.items() if slots > 0]


def free_channels(agent: AgentView) -> list[str]:
    return agent.free_channels()
