"""The agent side of a round: the best waiting conversation for an agent whose slot just
freed (``router.decide``'s hot path when work ends), searched over the heads of the queues the
agent may serve (``router.index.agent_lookups``, walked in ``router.queue_refs``'s tree)."""

from __future__ import annotations

from math import inf

from router.heaps import in_order
from router.index import conversation_valid
from router.matching import EXCLUDING_DEPTH, Candidate, OpenHead, QueueHead, Rank, Round
from router.queue_refs import Listed, QueueRef, agent_groups, queue_refs
from router.state import AgentView, ConversationView, Entry


def best_waiting_for(rnd: Round, agent_id: str, agent: AgentView, channel: str) -> Candidate | None:
    """The first waiting conversation in queue order this agent may take on ``channel``.

    It looks at the head of every queue the agent may serve, so this loop is the hot path of
    a freed slot, and its cost is memory fetches: it reads each queue through its record
    (``router.queue_refs``: the top entry and the fields of its ``QueueHead`` side by side),
    the checks of ``effective.agent_fits`` are inlined, and a queue ordered by waiting time is
    ranked from its top entry alone before anything else, so a head that cannot beat the best
    so far costs neither the fit checks nor a look-up of its conversation (whether the agent
    fits does not change which queues rank ahead). An agent above a queue's minimum tier is
    checked against its ceiling first: for a specialist that rejects most heads unranked."""
    state = rnd.state
    conversations = state.conversations
    heads = rnd.heads
    ceilings = rnd.ceilings
    taken = rnd.taken
    profile = agent.profile
    tier = profile.tier
    skills = profile.skills
    spoken = profile.languages
    now_ts = rnd.now_ts
    aging = rnd.policy.aging_seconds
    best: Candidate | None = None
    best_rank: Rank | None = None
    # The best so far when it was ranked from its queue's top entry (else inf: unused). A head
    # of no higher base priority, no shorter SLA and a strictly later waiting time ranks worse
    # (its aging is no greater, its due time and waiting time later): it is skipped without
    # working its rank out, which is what most heads come to once a good one is found.
    best_since = inf
    best_base = 0
    best_sla = 0.0
    seen: set[QueueRef] = set()  # escalated queues are filed under two lookups
    for refs in agent_groups(queue_refs(state), agent, channel):
        if tier > 1:
            # Above every ceiling of the group: it would reject each record at the ceiling check.
            if refs.ceilings_for is not ceilings:
                _group_ceiling(rnd, refs)
            if tier > refs.max_ceiling:
                continue
        for ref in refs:
            if ref.heads_for is not heads:
                _cache_head(ref, rnd.queue_head(ref.key), heads)
            since = ref.since
            quick = ref.quick and since > 0.0
            if quick and since > best_since and ref.base <= best_base and ref.sla >= best_sla:
                continue
            if ref.escalated:
                if ref in seen:
                    continue
                seen.add(ref)
            min_tier = ref.min_tier
            if tier < min_tier:
                continue
            if tier > min_tier:
                # The ceiling is never below the minimum tier: only a higher tier needs it.
                if ref.ceiling_for is not ceilings:
                    ref.ceiling = rnd.ceiling(ref.key, ref.head.eff)  # type: ignore[union-attr]
                    ref.ceiling_for = ceilings
                if tier > ref.ceiling:
                    continue
            top = ref.top
            if quick:
                # Round.rank from the entry: in a queue ordered by waiting time no later
                # entry ranks better than the top, so one that cannot win is skipped.
                prio = ref.base
                if aging > 0 and now_ts > since:
                    prio += int((now_ts - since) // aging)
                if best_rank is not None and -prio > best_rank[0]:
                    continue  # lower priority: the rank's first part decides, no tuple needed
                rank: Rank = (-prio, since + ref.sla, since, top[1])
                if best_rank is not None and rank >= best_rank:
                    continue
            head_info = ref.head
            assert head_info is not None
            fits = True
            for name, level in head_info.skills:
                if skills.get(name, 0) < level:
                    fits = False
                    break
            if not fits:
                continue
            if head_info.languages is not None:
                for language in head_info.languages:
                    if language in spoken:
                        break
                else:
                    continue
            key = ref.key
            eff = head_info.eff
            conv_or_none = conversations.get(top[1])
            if (
                conv_or_none is not None
                and conv_or_none.enqueued == top[2]
                and top[1] not in taken
                and agent_id not in conv_or_none.excluded
            ):
                conversation_id, conv = top[1], conv_or_none
            else:
                head = _first_open(rnd, key, agent_id)
                if head is None:
                    continue
                conversation_id, conv = head
                quick = False
            if not quick:
                rank = rnd.rank(conv, state.queue_signatures[key], eff, conversation_id)
            if best_rank is None or rank < best_rank:
                best = Candidate(conversation_id, conv, eff, rank)
                best_rank = rank
                if quick:
                    best_since, best_base, best_sla = since, ref.base, ref.sla
                else:
                    best_since = inf
    return best


def _group_ceiling(rnd: Round, refs: Listed) -> None:
    """The highest tier ceiling among a group's queues under this round's roster (each record
    keeps its own, as the search would work it out on reaching it)."""
    heads, ceilings = rnd.heads, rnd.ceilings
    highest = 0
    for ref in refs:
        if ref.heads_for is not heads:
            _cache_head(ref, rnd.queue_head(ref.key), heads)
        if ref.ceiling_for is not ceilings:
            ref.ceiling = rnd.ceiling(ref.key, ref.head.eff)  # type: ignore[union-attr]
            ref.ceiling_for = ceilings
        highest = max(highest, ref.ceiling)
    refs.max_ceiling = highest
    refs.ceilings_for = ceilings


def _cache_head(ref: QueueRef, head: QueueHead, heads: object) -> None:
    """Copy what the search reads for every head onto the queue's record (see ``queue_refs``)."""
    ref.head = head
    ref.base = head.base_priority
    ref.sla = head.sla_seconds
    ref.quick = not head.explicit_sla
    ref.escalated = head.escalated
    ref.min_tier = head.min_tier
    ref.heads_for = heads


def _first_open(rnd: Round, key: str, agent_id: str) -> tuple[str, ConversationView] | None:
    """The queue's first live conversation not yet decided on and not excluding the agent."""
    state = rnd.state
    entry = open_head(rnd, key)
    if entry is None:
        return None
    conv = state.conversations[entry[1]]
    if agent_id not in conv.excluded:
        return entry[1], conv
    # It excludes this agent (rare): the walk past such conversations, from the top.
    looked = 0
    for entry in in_order(state.queues[key]):
        if not conversation_valid(state, entry) or entry[1] in rnd.taken:
            continue
        conv = state.conversations[entry[1]]
        if agent_id not in conv.excluded:
            return entry[1], conv
        looked += 1
        if looked >= EXCLUDING_DEPTH:
            break
    return None


def open_head(rnd: Round, key: str) -> Entry | None:
    """The queue's first live entry not yet decided on in this round.

    A round that gives many conversations of one queue away (a burst of new work spread over
    the agents) asks for this after each: the walk is kept per queue for the round and resumed
    past what was decided on since, so the round walks each queue once, not once per decision."""
    cursor = rnd.open_heads.get(key)
    if cursor is None:
        cursor = rnd.open_heads[key] = OpenHead(in_order(rnd.state.queues[key]))
    taken = rnd.taken
    entry = cursor.entry
    if entry is not None and entry[1] not in taken:
        return entry
    if not cursor.done:
        state = rnd.state
        for entry in cursor.walk:
            if entry[1] not in taken and conversation_valid(state, entry):
                cursor.entry = entry
                return entry
        cursor.done = True
    cursor.entry = None
    return None
