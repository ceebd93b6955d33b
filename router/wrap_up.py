"""Wrap-up time: after an agent resolves a conversation, its slot stays taken for
``RouterPolicy.wrap_up_seconds[channel]`` before new work comes (notes, follow-ups).

The fold records the fact (``AgentView.wrap_up``: when she resolved what, per channel) and
knows no policy; whether a slot is still in wrap-up is worked out at decide time, from the
policy and ``now``. The free-agent index does not know about wrap-ups either: an agent in
wrap-up stays filed as free, and ``matching.Round.room`` (which every search checks) counts
her running wrap-ups as load. ``router.timers.end_wrap_ups`` looks at her again when one ends.

Only the newest ``capacity`` wrap-ups per channel are kept: at most that many slots can be
in wrap-up at once, and on one channel a later resolution always ends later.
"""

from __future__ import annotations

import heapq
from datetime import datetime

from router.policy import RouterPolicy
from router.state import AgentView, RouterState


def record(state: RouterState, agent_id: str, agent: AgentView, channel: str, at: datetime) -> None:
    """The fold: ``agent_id`` resolved a conversation on ``channel`` that she held, at ``at``."""
    keep = max(agent.profile.capacity.get(channel, 0), 1)
    agent.wrap_up[channel] = sorted([*agent.wrap_up.get(channel, ()), at])[-keep:]
    if not state.for_reading:
        heapq.heappush(state.pending.wrap_ups.setdefault(channel, []), (at.timestamp(), agent_id))


def busy(agent: AgentView, channel: str, now_ts: float, policy: RouterPolicy) -> tuple[int, int]:
    """(slots in wrap-up on ``channel``, slots in wrap-up on every channel) at ``now_ts``."""
    on_channel = total = 0
    for name, times in agent.wrap_up.items():
        seconds = policy.wrap_up_seconds.get(name, 0.0)
        if seconds <= 0:
            continue
        running = sum(1 for at in times if at.timestamp() + seconds > now_ts)
        total += running
        if name == channel:
            on_channel = running
    return on_channel, total


def room(agent: AgentView, channel: str, now_ts: float, policy: RouterPolicy) -> int:
    """Slots left on ``channel`` at ``now_ts``, counting the overall cap and running wrap-ups."""
    profile = agent.profile
    on_channel, total = busy(agent, channel, now_ts, policy) if agent.wrap_up else (0, 0)
    free = profile.capacity.get(channel, 0) - agent.load.get(channel, 0) - on_channel
    if profile.max_total is not None:
        free = min(free, profile.max_total - agent.total_load() - total)
    return max(free, 0)


def first_end(agent: AgentView, channel: str, now_ts: float, policy: RouterPolicy) -> float | None:
    """When the earliest running wrap-up on ``channel`` (or, under an overall cap, on any
    channel) ends; None when none runs."""
    names = [channel] if agent.profile.max_total is None else list(agent.wrap_up)
    ends = [
        at.timestamp() + policy.wrap_up_seconds.get(name, 0.0)
        for name in names
        for at in agent.wrap_up.get(name, ())
        if at.timestamp() + policy.wrap_up_seconds.get(name, 0.0) > now_ts
    ]
    return min(ends) if ends else None


def timers_from_facts(state: RouterState) -> dict[str, list[tuple[float, str]]]:
    """The wrap-up timers of a state decide has not seen before (fresh or loaded)."""
    timers: dict[str, list[tuple[float, str]]] = {}
    for agent_id, agent in state.agents.items():
        for channel, times in agent.wrap_up.items():
            timers.setdefault(channel, []).extend((at.timestamp(), agent_id) for at in times)
    for heap in timers.values():
        heapq.heapify(heap)
    return timers
