"""Indexes kept beside the facts, so a decision never scans every agent or conversation.

Two sides, both maintained by the fold through the hooks below:

- agents: an available agent with a free slot on a channel sits in one heap per
  "channel|skill|language|tier|level" it can serve (plus '*' for "any skill"/"any language"),
  ordered by its level in that language (highest first; none under '*'), then occupancy,
  then longest idle, then id; ``capable`` counts who is on shift.
- conversations: a waiting conversation sits in the queue of its signature (see
  ``QueueSignature``), ordered by waiting time, or, while held for its preferred agent, in
  that agent's held heap; queues are found through ``queue_lookup`` by channel, skill and
  language. Timers (offer expiries, holds, escalation steps) are heaps too.

Entries are removed lazily (see ``router.heaps``). Each hook also marks what decide has to
look at again in ``state.pending``. This module keeps the agent side; the conversation side
(signatures, queues, holds, timers) is ``router.index_queues``, re-exported here so the fold
and decide call one module.

An event costs what it changes, not the agent's skills x languages: a load change never
touches ``capable`` (who is on shift does not depend on load); taking work leaves the agent's
entries in place (they may rank it better than it now ranks; readers re-rank what they visit,
``heaps.in_true_order``) except where one is a heap's top, which is re-ranked at once with
whatever comes up behind it (``settle_top``: every top ranks its agent as it is, so a search
for the best free agent reads one entry, not every colleague's that ranks them too well), and
only the channels it has no room left on lose it from their live counts; handing work back
files it again on the channels it has room on (its place moved up). Queues are looked at
again on a roster change only where a tier ceiling may have risen (the last agent on shift
under some key left). Stale entries stay within twice the live
ones plus a constant per heap. ``tests/unit/router/test_index_rebuild.py`` checks the result
against indexes rebuilt from the facts after random histories.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import NamedTuple

from router import heaps
from router.index_keys import MAX_LEVEL as MAX_LEVEL
from router.index_keys import ChannelKeys, capable_channels, free_channels, keys_by_channel, lookup_key
from router.index_keys import agent_key as agent_key
from router.index_keys import agent_lookup_keys as agent_lookup_keys
from router.index_keys import agent_lookups as agent_lookups
from router.index_queues import conversation_valid as conversation_valid
from router.index_queues import enter_queue as enter_queue
from router.index_queues import leave_queue as leave_queue
from router.index_queues import offer_made as offer_made
from router.index_queues import offer_valid as offer_valid
from router.index_queues import requeue as requeue
from router.index_queues import signature as signature
from router.index_queues import tidy_timers as tidy_timers
from router.index_queues import touched as touched
from router.state import (
    RELAXED,
    AgentEntry,
    AgentView,
    CustomerView,
    RouterState,
)

# --- agents --------------------------------------------------------------------------


def agent_valid(state: RouterState, entry: AgentEntry, channel: str) -> bool:
    """Whether a free-agent entry filed under ``channel`` still stands for a free agent.

    An entry may rank its agent better than it now ranks (see ``load_changed``): read the
    heaps through ``current_entry`` / ``heaps.in_true_order``, not by the stored order alone."""
    agent = state.agents.get(entry[3])
    return agent is not None and agent.version == entry[4] and agent.has_room(channel)


def current_entry(state: RouterState, entry: AgentEntry, channel: str) -> AgentEntry | None:
    """The entry as the agent ranks now (occupancy, last work), or None when it is stale."""
    agent = state.agents.get(entry[3])
    if agent is None or agent.version != entry[4] or not agent.has_room(channel):
        return None
    occupancy, last = rank_now(agent)
    if occupancy == entry[1] and last == entry[2]:
        return entry
    return (entry[0], occupancy, last, entry[3], entry[4])


def rank_now(agent: AgentView) -> tuple[float, float]:
    """The agent's changing part of its place in a free-agent heap: occupancy, then last work."""
    # ``AgentView.occupancy`` written out: the fold asks this around every load change.
    profile = agent.profile
    total = sum(profile.capacity.values())
    cap = profile.max_total
    if cap is not None and cap < total:
        total = cap
    when = agent.last_work_at
    return (sum(agent.load.values()) / total if total > 0 else 1.0), (when.timestamp() if when else 0.0)


class LoadMark(NamedTuple):
    """What ``load_changed`` compares against: taken by ``load_changing`` before the change."""

    free: tuple[str, ...]
    rank: tuple[float, float]


def load_changing(agent: AgentView) -> LoadMark:
    """Call before an agent's load (or last work) changes; pass the mark to ``load_changed``."""
    return LoadMark(tuple(agent.free_channels()), rank_now(agent))


def load_changed(state: RouterState, agent_id: str, agent: AgentView, before: LoadMark) -> None:
    """An agent's load changed (work taken or handed back); its profile and status did not.

    Touches only what changed. Who is on shift (``capable``) does not depend on load, so it is
    left alone. When the agent took work its place in every heap got worse (more occupied,
    worked more recently), and its entries stay where they are: they rank it no better than
    it ranks, and readers re-rank what they visit (``heaps.in_true_order``); only the channels
    it no longer has room on lose it from their live counts, and where its entry is a heap's
    top it is re-ranked there (``settle_top``), so searches keep starting at a top that ranks
    as it is. When its place got better (work handed back), its entries must move up: it is
    filed again on the channels it has room on.
    """
    if agent.status != "available" or state.for_reading:
        return  # not filed anywhere (its entries went stale when it stopped being available)
    free = agent.free_channels()
    keys = keys_by_channel(state, agent_id, agent)
    rank = rank_now(agent)
    worse = rank >= before.rank
    if worse:
        for channel in free:
            if channel not in before.free:
                worse = False  # room it did not have: filed there below
                break
    if worse:
        free_agents = state.free_agents
        ranks: Ranks = {agent_id: rank}
        for channel in before.free:
            if channel not in free:
                for key, _ in keys.get(channel, ()):
                    _free_gone(state, key, channel, agent_id, ranks)
                continue
            for key, _ in keys.get(channel, ()):
                heap = free_agents.get(key)
                if heap and heap[0][3] == agent_id:
                    settle_top(state, heap, channel, ranks)
    else:
        agent.version += 1
        for channel in before.free:
            if channel not in free:
                for key, _ in keys.get(channel, ()):
                    _free_gone(state, key, channel, agent_id)
        _file_free(state, agent_id, agent, free, keys, counted=before.free, rank=rank)
    if free:
        state.pending.agents.add(agent_id)


# Agents' ranks worked out during one fold step (no load changes meanwhile), by agent id:
# an agent taking work tops many heaps with the same colleagues behind it.
Ranks = dict[str, tuple[float, float]]


def settle_top(state: RouterState, heap: list[AgentEntry], channel: str, ranks: Ranks | None = None) -> None:
    """Make the heap's top rank its agent as it ranks now (dropping stale tops), so a search
    that takes the top walks one entry instead of every entry that ranks its agent too well.

    The fold calls it wherever a top may have changed: an agent taking work is usually the
    top of the heaps it was found in (its entry moves down), an agent losing room or leaving
    takes its entry off, a push below the top or a compaction. Each entry re-ranked here stays
    exact until its agent's load changes again, so the cost is paid once per change of load
    (amortised: at most one step per entry a change made stale), not once per search as a
    reader re-ranking the same entries would. Entries only move down: a stored entry never
    ranks its agent worse than it ranks. ``ranks``: a memo for this fold step (no load
    changes within it; an agent taking work tops many heaps with the same colleagues behind)."""
    agents = state.agents
    if ranks is None:
        ranks = {}
    while heap:
        top = heap[0]
        agent_id = top[3]
        agent = agents.get(agent_id)
        if agent is None or agent.version != top[4] or not agent.has_room(channel):
            heapq.heappop(heap)
            continue
        rank = ranks.get(agent_id)
        if rank is None:
            rank = ranks[agent_id] = rank_now(agent)
        if rank[0] == top[1] and rank[1] == top[2]:
            return
        heapq.heapreplace(heap, (top[0], rank[0], rank[1], agent_id, top[4]))


def _free_gone(state: RouterState, key: str, channel: str, agent_id: str, ranks: Ranks | None = None) -> None:
    """One agent less with room under ``key``: its entry there is stale (dropped lazily, but
    a heap never holds more than twice its live entries plus a constant; at once when it is
    the top, see ``settle_top``)."""
    live = state.free_live.get(key, 0) - 1
    if live > 0:
        state.free_live[key] = live
        heap = state.free_agents.get(key)
        if heap is not None:
            if len(heap) > 2 * live + 64:
                heaps.compact(heap, lambda e: agent_valid(state, e, channel), live)
                settle_top(state, heap, channel, ranks)  # the new top may rank its agent too well
            elif heap and heap[0][3] == agent_id:
                settle_top(state, heap, channel, ranks)
    else:
        state.free_live.pop(key, None)
        state.free_agents.pop(key, None)


def _file_free(
    state: RouterState,
    agent_id: str,
    agent: AgentView,
    free: Iterable[str],
    keys: ChannelKeys,
    *,
    counted: tuple[str, ...] = (),
    rank: tuple[float, float] | None = None,
) -> None:
    """Push the agent's entries (current version and rank) under every key of the channels it
    has room on; ``counted``: channels whose live counts already include it (they stay);
    ``rank``: ``rank_now(agent)`` when the caller has it."""
    occupancy, last = rank if rank is not None else rank_now(agent)
    entries: dict[int, AgentEntry] = {}
    free_agents, free_live, version = state.free_agents, state.free_live, agent.version
    for channel in free:
        recount = channel not in counted
        for key, language_level in keys.get(channel, ()):
            entry = entries.get(language_level)
            if entry is None:
                entry = entries[language_level] = (-language_level, occupancy, last, agent_id, version)
            heap = free_agents.get(key)
            if heap is None:
                # Nobody else with room here (the usual case while everyone is busy).
                free_agents[key] = [entry]
                if recount:
                    free_live[key] = free_live.get(key, 0) + 1
                continue
            live = free_live.get(key, 0)
            if recount:
                live += 1
                free_live[key] = live
            heapq.heappush(heap, entry)
            if len(heap) > 2 * live + 64:

                def valid(e: AgentEntry, channel: str = channel) -> bool:
                    return agent_valid(state, e, channel)

                heaps.compact(heap, valid, live)
                settle_top(state, heap, channel, {agent_id: (occupancy, last)})
            # Else the top is the entry just pushed, or the one before, which the fold keeps
            # live and ranked as its agent is (``settle_top``): nothing to prune.


def agent_leaving(state: RouterState, agent_id: str, agent: AgentView) -> None:
    """Call before an agent's profile or status changes: withdraws its index entries."""
    agent.version += 1
    if agent.status != "available" or state.for_reading:
        return
    keys = keys_by_channel(state, agent_id, agent)
    for channel in capable_channels(agent):
        for key, _ in keys.get(channel, ()):
            left = state.capable.get(key, 0) - 1
            if left > 0:
                state.capable[key] = left
            else:
                state.capable.pop(key, None)
                _nobody_capable(state, key)
                _roster_moved(state)
    for channel in free_channels(agent):
        for key, _ in keys.get(channel, ()):
            _free_gone(state, key, channel, agent_id)


def agent_changed(state: RouterState, agent_id: str, agent: AgentView, *, roster: bool = False) -> None:
    """Call after an agent's profile or status changed: files it again.

    ``roster``: its status or profile changed, so who is on shift changed. A queue's tier
    ceiling rises only when the last agent on shift of some tier who could do its work leaves
    (``agent_leaving`` marks those queues) or when a higher tier appears (marked here); an
    agent coming on shift can only lower ceilings, and the work it can take itself is found
    by looking at the agent (marked below when it has room).
    """
    if agent.profile.tier > state.max_agent_tier:
        state.max_agent_tier = agent.profile.tier
        if roster:
            _mark_queues_for(state, agent)
    if agent.status != "available" or state.for_reading:
        return
    keys = keys_by_channel(state, agent_id, agent)
    for channel in capable_channels(agent):
        for key, _ in keys.get(channel, ()):
            count = state.capable.get(key, 0) + 1
            state.capable[key] = count
            if count == 1:
                _roster_moved(state)
    free = free_channels(agent)
    if not free:
        return
    _file_free(state, agent_id, agent, free, keys)
    state.pending.agents.add(agent_id)


def roster_generation(state: RouterState) -> int:
    """Changes whenever some index key gains its first or loses its last agent on shift (what
    tier ceilings depend on). A cache key, not a fact: a loaded state starts again at 0."""
    generation: int = state.__dict__.get("_roster_generation", 0)
    return generation


def _roster_moved(state: RouterState) -> None:
    state.__dict__["_roster_generation"] = roster_generation(state) + 1


def _nobody_capable(state: RouterState, key: str) -> None:
    """Nobody on shift is left under ``key``: the tier ceiling of queues looking there may rise."""
    channel, skill, language, _ = key.split("|", 3)
    marks = state.pending.queues
    for lookup in (lookup_key(channel, skill, language), lookup_key(channel, skill, RELAXED)):
        for found in state.queue_lookup.get(lookup, {}).values():
            marks.update(found)


def _mark_queues_for(state: RouterState, agent: AgentView) -> None:
    marks = state.pending.queues
    for channel in agent.profile.capacity:
        for key in agent_lookup_keys(agent, channel):
            for found in state.queue_lookup.get(key, {}).values():
                marks.update(found)


def holds_changed(state: RouterState, agent_id: str) -> None:
    """Call after an agent's status or profile changed: whether it still counts for the
    conversations held for it depends on both, so decide judges those holds again."""
    for entry in state.held.get(agent_id, ()):
        if conversation_valid(state, entry):
            state.pending.held.add(entry[1])


def case_owner_changed(state: RouterState, customer: CustomerView) -> None:
    """Call after a customer's case owner (or when its case was resolved) changed: a hold for
    the former owner no longer counts, so decide judges the customer's holds again."""
    for conversation_id in customer.open_conversations:
        conv = state.conversations.get(conversation_id)
        if conv is not None and conv.status == "waiting" and conv.is_held():
            state.pending.held.add(conversation_id)


def status_changed(state: RouterState, agent_id: str, agent: AgentView) -> None:
    """Holds for this agent are judged again; an offline agent's conversations are handed back."""
    holds_changed(state, agent_id)
    if agent.status == "offline":
        state.release_pending.update(agent.holding)
        state.pending.releases.update(agent.holding)
    else:
        state.release_pending.difference_update(agent.holding)
    if agent.status == "available":
        state.streaking_agents.discard(agent_id)


def streak_changed(state: RouterState, agent_id: str, agent: AgentView) -> None:
    if agent.expired_in_a_row > 0:
        state.streaking_agents.add(agent_id)
        state.pending.streaks.add(agent_id)
    else:
        state.streaking_agents.discard(agent_id)
