"""One round of decisions: capacity used so far, and the best free agent for a conversation
(the other search, the best waiting conversation for an agent, is ``router.work_for_agent``).

Choice among eligible agents (after the case owner, see ``router.decide``): the lowest
tier that may take the work, then the primary language before fallbacks, then the best
skill level (``RouterPolicy.skill_fit``), then the highest level in that language, then
lowest occupancy, then longest idle, then agent id. Queue order: effective priority, then
SLA due time, then waiting since, then id.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, cast

from events.model import AgentOffered, ConversationAssigned, DecisionReason, LogEvent
from router import cross_channel, wrap_up
from router import effective as eff_
from router.effective import Effective
from router.heaps import in_true_order
from router.index import (
    MAX_LEVEL,
    agent_key,
    current_entry,
    roster_generation,
)
from router.policy import RouterPolicy
from router.state import ANY, AgentEntry, AgentView, ConversationView, Entry, QueueSignature, RouterState

# How many valid but unsuitable entries (other skills missing, excluded, used up in this
# round) a search looks past in one heap before it switches to the exact fallback (the
# rarest required skill's agents, see ``_exhaustive``); stale entries do not count
# (compaction bounds them).
SEARCH_DEPTH = 256
# How many conversations excluding an agent its search for work looks past in one queue.
# (The queue's own routing, ``decide._route_queue``, covers the rest of such a queue.)
EXCLUDING_DEPTH = 256
# How many conversations with exclusions a queue scan may fail on before it stops: a
# conversation without exclusions that finds nobody means nobody fits the whole queue.
EXCLUDED_FAILURES = 32

Rank = tuple[int, float, float, str]


class QueueHead(NamedTuple):
    """Per queue, under one policy: its effective requirements, unpacked for the hot loop."""

    eff: Effective
    min_tier: int
    skills: tuple[tuple[str, int], ...]
    languages: tuple[str, ...] | None
    base_priority: int  # requirement priority plus tier, flag and public boosts
    explicit_sla: bool
    # Copied from ``eff`` so that the hot loop ranks a head and rejects it without reading
    # ``eff`` at all (one object less to fetch per queue looked at).
    escalated: bool  # eff.step > 0
    sla_seconds: float


@dataclass(frozen=True, slots=True)
class Decision:
    """An event to append; ``expected`` is the last sequence of its subject the decision
    was made on (None: append without a check, used for agent subjects)."""

    event: LogEvent
    expected: int | None


@dataclass(slots=True)
class Candidate:
    conversation_id: str
    conv: ConversationView
    eff: Effective
    rank: Rank


@dataclass(slots=True)
class OpenHead:
    """A queue's walk in order within one round (``work_for_agent.open_head``), resumed where
    it stopped: the facts stand still within a round and conversations decided on only add up."""

    walk: Iterator[Entry]
    entry: Entry | None = None  # the first live entry not decided on when last looked
    done: bool = False


@dataclass
class Round:
    state: RouterState
    now: datetime
    policy: RouterPolicy
    decisions: list[Decision] = field(default_factory=list)
    used: dict[tuple[str, str], int] = field(default_factory=dict)
    used_total: dict[str, int] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)  # conversations decided on in this round
    withdrawn: set[str] = field(default_factory=set)  # agents set away in this round
    ceilings: dict[str, int] = field(default_factory=dict)
    open_heads: dict[str, OpenHead] = field(default_factory=dict)  # by queue key, for this round

    def __post_init__(self) -> None:
        self.now_ts = self.now.timestamp()
        cache = self.state.__dict__.get("_effective")
        if (
            cache is None
            or (cache[0] is not self.policy and cache[0] != self.policy)
            or len(cache[1]) > 4 * len(self.state.queues) + 1024
        ):
            cache = (self.policy, {}, {})
            self.state.__dict__["_effective"] = cache
        self.effectives = cast(dict[str, Effective], cache[1])
        self.heads = cast(dict[str, QueueHead], cache[2])
        # Tier ceilings depend on the policy and on which index keys have someone on shift:
        # kept across rounds until one of those changes (``index.roster_generation``).
        roster = (roster_generation(self.state), self.state.max_agent_tier)
        kept = self.state.__dict__.get("_ceilings")
        if kept is None or kept[0] is not self.effectives or kept[1] != roster:
            kept = (self.effectives, roster, {})
            self.state.__dict__["_ceilings"] = kept
        self.ceilings = cast(dict[str, int], kept[2])

    # -- bookkeeping ----------------------------------------------------------------

    def full(self) -> bool:
        return len(self.decisions) >= self.policy.max_decisions_per_call

    def room(self, agent_id: str, agent: AgentView, channel: str) -> int:
        """Slots left (callers only ask whether any): the channel's own count first, since every
        term after it only takes slots away, and a freed agent is asked about each channel of
        hers, most of them full."""
        profile = agent.profile
        free = profile.capacity.get(channel, 0) - agent.load.get(channel, 0)
        if free <= 0:
            return free
        if self.policy.exclusive_channels and self._cross_channel_blocks(agent_id, agent, channel):
            return 0
        # Slots in wrap-up are taken (router.wrap_up): the index files such an agent as free.
        wrapping, wrapping_total = (0, 0)
        if self.policy.wrap_up_seconds and agent.wrap_up:  # the policy first: the agent's is a cold read
            wrapping, wrapping_total = wrap_up.busy(agent, channel, self.now_ts, self.policy)
        free = (
            profile.capacity.get(channel, 0)
            - agent.load.get(channel, 0)
            - self.used.get((agent_id, channel), 0)
            - wrapping
        )
        if profile.max_total is not None:
            free = min(free, profile.max_total - agent.total_load() - self.used_total.get(agent_id, 0) - wrapping_total)
        return free

    def _cross_channel_blocks(self, agent_id: str, agent: AgentView, channel: str) -> bool:
        """``router.cross_channel``: a call (or other exclusive work) takes the agent whole."""
        wrapping = bool(self.policy.wrap_up_seconds and agent.wrap_up)
        if not wrapping and channel not in self.policy.exclusive_channels:
            # The usual case, inlined (this runs for every agent a search visits).
            load, used = agent.load, self.used
            for name in self.policy.exclusive_channels:
                if load.get(name, 0) or (used and used.get((agent_id, name), 0)):
                    return True
            return False
        return cross_channel.blocks(
            self.policy,
            channel,
            agent.load,
            lambda name: self.used.get((agent_id, name), 0),
            self.used_total.get(agent_id, 0),
            lambda name: wrap_up.busy(agent, name, self.now_ts, self.policy)[0] if wrapping else 0,
        )

    def queue_effective(self, key: str) -> Effective:
        found = self.effectives.get(key)
        if found is None:
            found = self.effectives[key] = eff_.effective(self.state.queue_signatures[key], self.policy)
        return found

    def queue_head(self, key: str) -> QueueHead:
        """What ranking a queue's head needs besides the head (cached like ``queue_effective``)."""
        found = self.heads.get(key)
        if found is None:
            eff = self.queue_effective(key)
            sig = self.state.queue_signatures[key]
            found = self.heads[key] = QueueHead(
                eff,
                eff.min_tier,
                tuple(eff.skills.items()),
                eff.languages,
                sig.priority + eff.boost,
                sig.explicit_sla,
                eff.step > 0,
                eff.sla_seconds,
            )
        return found

    def ceiling(self, key: str, eff: Effective) -> int:
        found = self.ceilings.get(key)
        if found is None:
            found = self.ceilings[key] = eff_.tier_ceiling(self.state, eff)
        return found

    def rank(self, conv: ConversationView, sig: QueueSignature, eff: Effective, conversation_id: str) -> Rank:
        # eff_.priority and eff_.sla_due, inlined: this runs for every queue an agent may serve.
        waiting_since = conv.waiting_since
        since = waiting_since.timestamp() if waiting_since is not None else 0.0
        aging = self.policy.aging_seconds
        prio = sig.priority + eff.boost
        if waiting_since is not None and aging > 0:
            prio += int(max(0.0, self.now_ts - since) // aging)
        due = conv.requirements.sla_due
        return (-prio, due.timestamp() if due is not None else since + eff.sla_seconds, since, conversation_id)

    def emit(self, event: LogEvent, expected: int | None, conversation_id: str | None = None) -> None:
        self.decisions.append(Decision(event=event, expected=expected))
        if conversation_id is not None:
            self.taken.add(conversation_id)

    def give(
        self,
        conversation_id: str,
        conv: ConversationView,
        agent_id: str,
        agent: AgentView,
        *,
        rule: str,
        priority: int,
        level: int,
    ) -> None:
        """Offer or assign (per the channel's mode), with the reason and its score parts."""
        last = agent.last_work_at.timestamp() if agent.last_work_at else None
        since = conv.waiting_since.timestamp() if conv.waiting_since else self.now_ts
        reason = DecisionReason(
            rule=rule,
            step=conv.step,
            score={
                "priority": float(priority),
                "tier": float(agent.profile.tier),
                "skill": float(level),
                "occupancy": round(agent.occupancy(), 3),
                "idle_s": round(self.now_ts - last, 1) if last is not None else -1.0,
                "waited_s": round(self.now_ts - since, 1),
            },
        )
        event: LogEvent
        if conv.channel in self.policy.offer_channels:
            event = AgentOffered(
                at=self.now,
                customer_id=conv.customer_id,
                conversation_id=conversation_id,
                agent_id=agent_id,
                expires_at=self.now + timedelta(seconds=self.policy.offer_timeout_seconds),
                reason=reason,
            )
        else:
            event = ConversationAssigned(
                at=self.now,
                customer_id=conv.customer_id,
                conversation_id=conversation_id,
                agent_id=agent_id,
                channel=conv.channel,
                reason=reason,
            )
        self.emit(event, conv.subject_seq, conversation_id)
        self.used[(agent_id, conv.channel)] = self.used.get((agent_id, conv.channel), 0) + 1
        self.used_total[agent_id] = self.used_total.get(agent_id, 0) + 1


# --- the best agent for a conversation ---------------------------------------------------


def best_agent(rnd: Round, eff: Effective, ceiling: int, conv: ConversationView) -> tuple[str, AgentView, int] | None:
    """(agent id, agent, skill level) of the best free agent for ``conv``, or None: then no
    eligible free agent exists (the search never gives up on a depth limit)."""
    languages = eff.languages or (ANY,)
    levels = eff_.levels(eff, rnd.policy)
    for tier in range(eff.min_tier, min(ceiling, rnd.state.max_agent_tier) + 1):
        for language in languages:
            found = _search_bucket(rnd, eff, conv, tier, language, levels)
            if found is not None:
                return found
    return None


def _search_bucket(
    rnd: Round, eff: Effective, conv: ConversationView, tier: int, language: str, levels: Sequence[int]
) -> tuple[str, AgentView, int] | None:
    """The best eligible free agent of one tier and language: the primary skill's heaps in
    best-fit order, each walked in agent order. A walk that meets ``SEARCH_DEPTH`` unsuitable
    agents (other skills missing, excluded, used up in this round) hands over to
    ``_exhaustive``, which is exact, so "None" always means "nobody eligible here"."""
    free_agents = rnd.state.free_agents
    keys = _bucket_keys(eff.channel, eff.primary, language, tier)
    for level in levels:
        # (A requirement may name a level outside 1..5: no agent is filed there.)
        heap = free_agents.get(
            keys[level] if 0 <= level <= MAX_LEVEL else agent_key(eff.channel, eff.primary, language, tier, level)
        )
        if not heap:
            continue
        if len(heap) == 1:
            # The usual heap here (one agent with room under the key): its one entry as the
            # agent ranks now is what the walk below would yield, without two generators.
            only = current_entry(rnd.state, heap[0], eff.channel)
            if only is not None:
                agent = rnd.state.agents[only[3]]
                if _eligible(rnd, only[3], agent, eff, conv):
                    return only[3], agent, level
            continue
        for looked, entry in enumerate(_free_in_order(rnd.state, heap, eff.channel), start=1):
            agent = rnd.state.agents[entry[3]]
            if _eligible(rnd, entry[3], agent, eff, conv):
                return entry[3], agent, level
            if looked >= SEARCH_DEPTH:
                return _exhaustive(rnd, eff, conv, tier, language, levels)
    return None


@functools.lru_cache(maxsize=8192)
def _bucket_keys(channel: str, skill: str, language: str, tier: int) -> tuple[str, ...]:
    """``agent_key`` for each level 0..MAX_LEVEL: the same few buckets are looked in on every
    arrival and freed slot, and building five keys cost more than looking in the heaps."""
    return tuple(sys.intern(agent_key(channel, skill, language, tier, level)) for level in range(MAX_LEVEL + 1))


def _exhaustive(
    rnd: Round, eff: Effective, conv: ConversationView, tier: int, language: str, levels: Sequence[int]
) -> tuple[str, AgentView, int] | None:
    """The fallback: look at every free agent (of this tier and language) having the rarest
    required skill, the smallest set any eligible agent must belong to, and keep the best by
    the usual ranking (best fit of the primary level, then heap order: language level,
    occupancy, idle, id).

    Its cost is bounded by that set, never by all agents; it only runs when the top of a
    primary-skill heap is crowded with agents lacking a rarer skill (or used up this round)."""
    state = rnd.state
    counts = {
        name: sum(
            state.free_live.get(agent_key(eff.channel, name, language, tier, level), 0)
            for level in range(eff_.lowest_level(minimum), MAX_LEVEL + 1)
        )
        for name, minimum in eff.skills.items()
    }
    rarest = min(counts, key=lambda name: (counts[name], name), default=ANY)
    if counts.get(rarest) == 0:
        return None
    if rarest == eff.primary:
        # The primary skill is itself the rarest: the same walk, without a depth limit.
        for level in levels:
            heap = state.free_agents.get(agent_key(eff.channel, eff.primary, language, tier, level), [])
            for entry in _free_in_order(state, heap, eff.channel):
                agent = state.agents[entry[3]]
                if _eligible(rnd, entry[3], agent, eff, conv):
                    return entry[3], agent, level
        return None
    order = {level: n for n, level in enumerate(levels)}
    best: tuple[tuple[int, int, float, float, str], str, AgentView, int] | None = None
    for level in range(eff_.lowest_level(eff.skills[rarest]), MAX_LEVEL + 1):
        for stored in state.free_agents.get(agent_key(eff.channel, rarest, language, tier, level), ()):
            now = current_entry(state, stored, eff.channel)
            if now is None:
                continue
            agent = state.agents[now[3]]
            if not _eligible(rnd, now[3], agent, eff, conv):
                continue
            primary_level = min(agent.profile.skills.get(eff.primary, 0), MAX_LEVEL)
            rank = (order.get(primary_level, len(order)), *now[:4])
            if best is None or rank < best[0]:
                best = (rank, now[3], agent, primary_level)
    return (best[1], best[2], best[3]) if best is not None else None


def _free_in_order(state: RouterState, heap: list[AgentEntry], channel: str) -> Iterator[AgentEntry]:
    """A free-agent heap's live entries, best first, as the agents rank now (see ``index.load_changed``)."""
    return in_true_order(heap, lambda entry: current_entry(state, entry, channel))


def _eligible(rnd: Round, agent_id: str, agent: AgentView, eff: Effective, conv: ConversationView) -> bool:
    """Tier and language come from the heap's key; the rest is checked here."""
    return (
        agent_id not in conv.excluded
        and agent_id not in rnd.withdrawn
        and rnd.room(agent_id, agent, eff.channel) > 0
        and _other_skills(agent, eff)
    )


def _other_skills(agent: AgentView, eff: Effective) -> bool:
    skills = agent.profile.skills
    return all(skills.get(name, 0) >= level for name, level in eff.skills.items())


# --- the best conversation for an agent --------------------------------------------------
