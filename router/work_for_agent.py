"""The agent side of a round: the best waiting conversation for an agent whose slot just
freed (``router.decide``'s hot path when work ends), searched over the heads of the queues the
agent may serve (``router.index.agent_lookups``)."""

from __future__ import annotations

from router.heaps import in_order
from router.index import agent_lookups, conversation_valid
from router.matching import EXCLUDING_DEPTH, Candidate, Rank, Round
from router.state import AgentView, ConversationView


def best_waiting_for(rnd: Round, agent_id: str, agent: AgentView, channel: str) -> Candidate | None:
    """The first waiting conversation in queue order this agent may take on ``channel``.

    It looks at the head of every queue the agent may serve, so this loop is the hot path of
    a freed slot: the checks of ``effective.agent_fits`` are inlined, and a queue ordered by
    waiting time is ranked from its top entry alone (its head's waiting time), so a head that
    cannot beat the best so far is never looked up."""
    state = rnd.state
    conversations = state.conversations
    queues = state.queues
    heads = rnd.heads
    taken = rnd.taken
    profile = agent.profile
    tier = profile.tier
    skills = profile.skills
    spoken = profile.languages
    now_ts = rnd.now_ts
    aging = rnd.policy.aging_seconds
    best: Candidate | None = None
    seen: set[str] = set()  # escalated queues are filed under two lookups
    for lookup, groups in agent_lookups(state, agent_id, agent, channel):
        filed = state.queue_lookup.get(lookup)
        if not filed:
            continue
        for group in groups:
            for key in filed.get(group, ()):
                head_info = heads.get(key) or rnd.queue_head(key)
                eff = head_info.eff
                if eff.step > 0:
                    if key in seen:
                        continue
                    seen.add(key)
                if tier < head_info.min_tier:
                    continue
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
                # The ceiling is never below the minimum tier: only a higher tier needs it worked out.
                if tier > eff.min_tier and tier > rnd.ceiling(key, eff):
                    continue
                # The fold keeps a queue's top entry live (``index.leave_queue``): usually the head.
                top = queues[key][0]
                since = top[0]
                quick = since > 0.0 and not head_info.explicit_sla
                if quick:
                    # Round.rank from the entry: in a queue ordered by waiting time no later
                    # entry ranks better than the top, so one that cannot win is skipped.
                    prio = head_info.base_priority
                    if aging > 0:
                        prio += int(max(0.0, now_ts - since) // aging)
                    rank: Rank = (-prio, since + eff.sla_seconds, since, top[1])
                    if best is not None and rank >= best.rank:
                        continue
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
                if best is None or rank < best.rank:
                    best = Candidate(conversation_id, conv, eff, rank)
    return best


def _first_open(rnd: Round, key: str, agent_id: str) -> tuple[str, ConversationView] | None:
    """The queue's first live conversation not yet decided on and not excluding the agent."""
    state = rnd.state
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
