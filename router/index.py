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
look at again in ``state.pending``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import msgspec

from router import heaps
from router.state import (
    ANY,
    RELAXED,
    AgentEntry,
    AgentView,
    ConversationView,
    Entry,
    QueueSignature,
    RouterState,
)

MAX_LEVEL = 5
_key_encoder = msgspec.json.Encoder()


# --- keys ----------------------------------------------------------------------------


def agent_key(channel: str, skill: str, language: str, tier: int, level: int) -> str:
    return f"{channel}|{skill}|{language}|{tier}|{level}"


def lookup_key(channel: str, skill: str, language: str) -> str:
    return f"{channel}|{skill}|{language}"


def _agent_skills(agent: AgentView) -> list[tuple[str, int]]:
    skills = [(name, min(level, MAX_LEVEL)) for name, level in agent.profile.skills.items() if level > 0]
    skills.append((ANY, 0))
    return skills


def _agent_keys(agent: AgentView, channels: Iterable[str]) -> list[str]:
    return [key for key, _ in _agent_keys_with_language_level(agent, channels)]


def _agent_keys_with_language_level(agent: AgentView, channels: Iterable[str]) -> list[tuple[str, int]]:
    """Index keys with the agent's level in the key's language (0 under '*', any language)."""
    skills = _agent_skills(agent)
    languages = [*agent.profile.languages.items(), (ANY, 0)]
    tier = agent.profile.tier
    return [
        (agent_key(channel, skill, language, tier, level), language_level)
        for channel in channels
        for skill, level in skills
        for language, language_level in languages
    ]


def agent_lookup_keys(agent: AgentView, channel: str) -> list[str]:
    """The queue lookup keys under which work this agent might take is filed."""
    languages = [*agent.profile.languages, ANY, RELAXED]
    return [lookup_key(channel, skill, language) for skill, _ in _agent_skills(agent) for language in languages]


def _capable_channels(agent: AgentView) -> list[str]:
    return [channel for channel, slots in agent.profile.capacity.items() if slots > 0]


def _free_channels(agent: AgentView) -> list[str]:
    return [channel for channel in agent.profile.capacity if agent.free_on(channel) > 0]


def signature(state: RouterState, conv: ConversationView) -> QueueSignature:
    req = conv.requirements
    customer = state.customer(conv.customer_id)
    return QueueSignature(
        channel=conv.channel,
        skills=tuple(sorted(req.skills.items())),
        language=req.language or (customer.preferred_language if customer else None),
        fallback_languages=tuple(req.fallback_languages),
        min_tier=max(req.min_tier, conv.escalated_tier),
        transfers=min(conv.transfer_count, 100),
        customer_tier=customer.tier if customer else "standard",
        flags=tuple(sorted(set(customer.flags))) if customer else (),
        public=conv.public,
        priority=req.priority,
        step=conv.step,
        explicit_sla=req.sla_due is not None,
    )


def _queue_lookups(sig: QueueSignature) -> list[str]:
    skill, _ = sig.primary_skill()
    keys = [lookup_key(sig.channel, skill, sig.language or ANY)]
    if sig.step > 0:
        # An escalated conversation may accept other languages (policy decides which).
        keys.append(lookup_key(sig.channel, skill, RELAXED))
    return keys


# --- agents --------------------------------------------------------------------------


def agent_valid(state: RouterState, entry: AgentEntry) -> bool:
    agent = state.agents.get(entry[3])
    return agent is not None and agent.version == entry[4]


def agent_leaving(state: RouterState, agent_id: str, agent: AgentView) -> None:
    """Call before an agent's profile, status or load changes: withdraws its index entries."""
    agent.version += 1
    if agent.status != "available":
        return
    for key in _agent_keys(agent, _capable_channels(agent)):
        left = state.capable.get(key, 0) - 1
        if left > 0:
            state.capable[key] = left
        else:
            state.capable.pop(key, None)
    for key in _agent_keys(agent, _free_channels(agent)):
        live = state.free_live.get(key, 0) - 1
        heap = state.free_agents.get(key)
        if live > 0 and heap is not None:
            state.free_live[key] = live
            heaps.prune(heap, lambda e: agent_valid(state, e))
        else:
            state.free_live.pop(key, None)
            state.free_agents.pop(key, None)


def agent_changed(state: RouterState, agent_id: str, agent: AgentView, *, roster: bool = False) -> None:
    """Call after an agent's profile, status or load changed: files it again.

    ``roster``: its status or profile changed, so who is on shift changed, which moves the
    tier ceiling of the queues it could serve: those queues are looked at again.
    """
    state.max_agent_tier = max(state.max_agent_tier, agent.profile.tier)
    if roster:
        _mark_queues_for(state, agent)
    if agent.status != "available":
        return
    for key in _agent_keys(agent, _capable_channels(agent)):
        state.capable[key] = state.capable.get(key, 0) + 1
    free = _free_channels(agent)
    if not free:
        return
    occupancy = agent.occupancy()
    last = agent.last_work_at.timestamp() if agent.last_work_at else 0.0
    entries: dict[int, AgentEntry] = {}
    for key, language_level in _agent_keys_with_language_level(agent, free):
        entry = entries.get(language_level)
        if entry is None:
            entry = entries[language_level] = (-language_level, occupancy, last, agent_id, agent.version)
        heap = state.free_agents.setdefault(key, [])
        live = state.free_live.get(key, 0) + 1
        state.free_live[key] = live
        heapq.heappush(heap, entry)
        heaps.compact(heap, lambda e: agent_valid(state, e), live)
    state.pending.agents.add(agent_id)


def _mark_queues_for(state: RouterState, agent: AgentView) -> None:
    marks = state.pending.queues
    for channel in agent.profile.capacity:
        for key in agent_lookup_keys(agent, channel):
            found = state.queue_lookup.get(key)
            if found:
                marks.update(found)


def status_changed(state: RouterState, agent_id: str, agent: AgentView) -> None:
    """Holds for this agent are judged again; an offline agent's conversations are handed back."""
    for entry in state.held.get(agent_id, ()):
        if conversation_valid(state, entry):
            state.pending.held.add(entry[1])
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
    else:
        state.streaking_agents.discard(agent_id)


# --- conversations -------------------------------------------------------------------


def conversation_valid(state: RouterState, entry: Entry) -> bool:
    conv = state.conversations.get(entry[1])
    return conv is not None and conv.enqueued == entry[2]


def offer_valid(state: RouterState, entry: Entry) -> bool:
    conv = state.conversations.get(entry[1])
    return conv is not None and conv.enqueued == entry[2] and conv.status == "offered"


def enter_queue(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """The conversation is waiting (again): file it in its queue, or hold it for its preferred agent."""
    conv.enqueued += 1
    since = conv.waiting_since.timestamp() if conv.waiting_since else 0.0
    entry: Entry = (since, conversation_id, conv.enqueued)
    if conv.preferred_agent is not None and not conv.preference_dropped:
        heapq.heappush(state.held.setdefault(conv.preferred_agent, []), entry)
        heapq.heappush(state.held_timers, entry)
        state.pending.held.add(conversation_id)
        return
    sig = signature(state, conv)
    key = _key_encoder.encode(sig).decode()
    queue = state.queues.get(key)
    if queue is None:
        queue = state.queues[key] = []
        state.queue_signatures[key] = sig
        state.queue_sizes[key] = 0
        for lookup in _queue_lookups(sig):
            state.queue_lookup.setdefault(lookup, set()).add(key)
    due = conv.requirements.sla_due
    heapq.heappush(queue, (due.timestamp(), conversation_id, conv.enqueued) if due is not None else entry)
    state.queue_sizes[key] += 1
    state.queued += 1
    conv.queue_key = key
    state.pending.queues.add(key)
    timers = state.step_timers.setdefault(conv.step, [])
    heapq.heappush(timers, entry)
    heaps.compact(timers, lambda e: conversation_valid(state, e), state.queued)


def leave_queue(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """The conversation stops waiting (or is about to be filed again): its entries go stale."""
    conv.enqueued += 1
    key = conv.queue_key
    conv.queue_key = ""
    if key:
        state.queued -= 1
        size = state.queue_sizes.get(key, 0) - 1
        if size > 0:
            state.queue_sizes[key] = size
            heaps.compact(state.queues[key], lambda e: conversation_valid(state, e), size)
        else:
            _drop_queue(state, key)
    elif conv.preferred_agent is not None:
        held = state.held.get(conv.preferred_agent)
        if held is not None:
            heaps.prune(held, lambda e: conversation_valid(state, e))
            if not held:
                del state.held[conv.preferred_agent]


def _drop_queue(state: RouterState, key: str) -> None:
    sig = state.queue_signatures.pop(key)
    state.queues.pop(key, None)
    state.queue_sizes.pop(key, None)
    state.pending.queues.discard(key)
    for lookup in _queue_lookups(sig):
        found = state.queue_lookup.get(lookup)
        if found is not None:
            found.discard(key)
            if not found:
                del state.queue_lookup[lookup]


def requeue(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """A waiting conversation's signature may have changed: file it again (it keeps its waiting time)."""
    leave_queue(state, conversation_id, conv)
    enter_queue(state, conversation_id, conv)


def touched(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    """Something happened on a waiting conversation's subject: decide looks at it again
    (a decision of ours on it may have lost the race to this event)."""
    if conv.status != "waiting":
        return
    if conv.queue_key:
        state.pending.queues.add(conv.queue_key)
    else:
        state.pending.held.add(conversation_id)


def offer_made(state: RouterState, conversation_id: str, conv: ConversationView) -> None:
    if conv.offer_expires_at is not None:
        heapq.heappush(state.offer_timers, (conv.offer_expires_at.timestamp(), conversation_id, conv.enqueued))


def tidy_timers(state: RouterState) -> None:
    """Pop timers that no longer apply off the tops, so decide's scans start at live ones."""
    heaps.prune(state.offer_timers, lambda e: offer_valid(state, e))
    heaps.prune(state.held_timers, lambda e: conversation_valid(state, e))
    for step in list(state.step_timers):
        timers = state.step_timers[step]
        heaps.prune(timers, lambda e: conversation_valid(state, e))
        if not timers:
            del state.step_timers[step]
