"""Deciding: ``decide(state, now, policy) -> list[Decision]``.

One call is one round. In order: agents who let too many offers expire are set away;
conversations of agents gone offline (or deactivated) are handed back; expired offers
expire; agents whose wrap-up ended are looked at again; then routing
(conversations held for their case owner or transfer target, agents with free slots, then
queues with new work); then holds that ran out and escalation steps that are due. A round
makes at most one decision per conversation, never gives an agent more than its free
capacity, and makes at most ``policy.max_decisions_per_call`` decisions.

decide reads the facts and never changes them. It only clears marks in ``state.pending``
(a cache of what changed since it last looked; see ``PendingWork``) for items it examined
and found nothing to do for, so an idle tick costs next to nothing at any scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from events.model import AgentStatusChanged, ConversationReleased, EscalationStepReached
from router import effective as eff_
from router import step_plan, timers, wrap_up
from router.heaps import in_order
from router.index import conversation_valid, signature
from router.lifecycle import DEACTIVATED_REASON
from router.matching import EXCLUDED_FAILURES, Candidate, Decision, Round, best_agent
from router.policy import DROP_PREFERRED, RouterPolicy
from router.state import AgentView, ConversationView, Entry, PendingWork, RouterState
from router.work_for_agent import best_waiting_for

__all__ = ["Decision", "decide"]


def decide(state: RouterState, now: datetime, policy: RouterPolicy) -> list[Decision]:
    step_plan.ensure(state, policy)
    rnd = Round(state, now, policy)
    work = state.pending
    if work.full:
        _mark_everything(state, work)
    _set_away(rnd)
    _release(rnd)
    timers.expire_offers(rnd)
    timers.end_wrap_ups(rnd)
    _route_held(rnd, work)
    _route_agents(rnd, work)
    _route_queues(rnd, work)
    timers.end_holds(rnd)
    timers.reach_steps(rnd)
    # Every agent given work this round is looked at again next round: if a decision loses
    # to a conflict (the customer wrote meanwhile), the agent's slot is free after all, and
    # the queues that lost out to it this round were let go on the belief it was taken.
    work.agents.update(agent_id for agent_id, _channel in rnd.used)
    return rnd.decisions


def _take_marks(rnd: Round, work: PendingWork, name: str) -> Iterator[str]:
    """The marks in ``work.<name>``, in order, each unmarked as it is taken; when the round is
    full the rest stay marked for the next one. The set is swapped for a new one: a set keeps
    its table size after discards, and one may have held every agent once."""
    marked: set[str] = getattr(work, name)
    if not marked:
        return  # most rounds: nothing marked (and no set to swap)
    todo = sorted(marked)
    marks: set[str] = set()
    setattr(work, name, marks)
    for n, item in enumerate(todo):
        if rnd.full():
            marks.update(todo[n:])
            return
        yield item


def _mark_everything(state: RouterState, work: PendingWork) -> None:
    """A state decide has not seen before (fresh or loaded): look at all of it once."""
    work.agents.update(a for a, agent in state.agents.items() if agent.status == "available")
    work.queues.update(state.queues)
    for entries in state.held.values():
        work.held.update(entry[1] for entry in entries if conversation_valid(state, entry))
    work.releases.update(state.release_pending)
    work.wrap_ups = wrap_up.timers_from_facts(state)
    work.streaks.update(state.streaking_agents)
    work.full = False


# --- agent state ---------------------------------------------------------------------


def _set_away(rnd: Round) -> None:
    """Sets away the available agents whose run of expired offers reached the limit. Only the
    streaks that grew since the last round are judged: the agents who once let an offer expire
    and then went on working pile up over a day, and were sorted and looked at every round."""
    limit = rnd.policy.expiries_before_away
    state, work = rnd.state, rnd.state.pending
    if limit <= 0:
        work.streaks.clear()
        work.away_limit = limit
        return
    if work.away_limit != limit:
        work.streaks.update(state.streaking_agents)
        work.away_limit = limit
    if not work.streaks:
        return
    marks, work.streaks = work.streaks, set()
    for agent_id in sorted(marks):
        agent = state.agents.get(agent_id)
        if agent is None or agent.status != "available" or agent.expired_in_a_row < limit:
            continue
        event = AgentStatusChanged(
            at=rnd.now,
            agent_id=agent_id,
            status="away",
            actor="router",
            reason=f"{agent.expired_in_a_row} offers expired in a row",
        )
        rnd.emit(event, None)
        rnd.withdrawn.add(agent_id)
        # Judged again until her status change is folded: the decision may lose to a conflict.
        work.streaks.add(agent_id)


def _release(rnd: Round) -> None:
    """An offline agent hands back pending offers and conversations on releasing channels; a
    deactivated one (always offline, see ``router.lifecycle``) everything she holds."""
    state = rnd.state
    work = state.pending
    # Only what changed is judged: an offline agent's kept email would otherwise be looked
    # at every round until they come back.
    for conversation_id in _take_marks(rnd, work, "releases"):
        if conversation_id not in state.release_pending:
            continue
        conv = state.conversations.get(conversation_id)
        if conv is None or conv.agent_id is None or conversation_id in rnd.taken:
            continue
        agent = state.agents.get(conv.agent_id)
        if agent is None or agent.status != "offline":
            continue
        if not agent.active or conv.status == "offered" or conv.channel in rnd.policy.release_on_offline:
            event = ConversationReleased(
                at=rnd.now,
                customer_id=conv.customer_id,
                conversation_id=conversation_id,
                agent_id=conv.agent_id,
                reason="agent_offline" if agent.active else DEACTIVATED_REASON,
            )
            rnd.emit(event, conv.subject_seq, conversation_id)
            work.releases.add(conversation_id)  # until its release is folded


# --- routing -------------------------------------------------------------------------


def _preferred_counts(rnd: Round, conv: ConversationView, eff: eff_.Effective) -> bool:
    """Whether the conversation should still wait for its preferred agent."""
    agent_id = conv.preferred_agent
    agent = rnd.state.agents.get(agent_id) if agent_id else None
    if agent_id is None or agent is None or agent.status == "offline" or agent_id in conv.excluded:
        return False
    if conv.preferred_is_transfer:
        return True  # an operator chose this agent
    explicit = conv.requirements.preferred_agent == agent_id
    customer = rnd.state.customer(conv.customer_id)
    recent = False
    if customer is not None and customer.last_agent == agent_id:
        resolved = customer.last_agent_resolved_at
        recent = resolved is None or (rnd.now - resolved).total_seconds() <= rnd.policy.case_owner_window_seconds
    # The case owner need not be the lowest tier that could do it, but must be able to.
    return (explicit or recent) and eff_.agent_fits(agent, eff, eff_.UNBOUNDED_TIER)


def _give_to_preferred(rnd: Round, conversation_id: str, conv: ConversationView, eff: eff_.Effective) -> bool:
    agent_id = conv.preferred_agent
    assert agent_id is not None
    agent = rnd.state.agents[agent_id]
    if agent.status != "available" or agent_id in rnd.withdrawn or rnd.room(agent_id, agent, conv.channel) <= 0:
        return False
    sig = signature(rnd.state, conv)
    rule = "transfer_target" if conv.preferred_is_transfer else "case_owner"
    prio = eff_.priority(conv, sig, eff, rnd.now_ts, rnd.policy.aging_seconds)
    level = agent.profile.skills.get(eff.primary, 0)
    rnd.give(conversation_id, conv, agent_id, agent, rule=rule, priority=prio, level=level)
    return True


def _route_held(rnd: Round, work: PendingWork) -> None:
    state = rnd.state
    for conversation_id in _take_marks(rnd, work, "held"):
        conv = state.conversations.get(conversation_id)
        if conv is None or conv.status != "waiting" or not conv.is_held() or conversation_id in rnd.taken:
            continue
        sig = signature(state, conv)
        eff = eff_.effective(sig, rnd.policy)
        if _preferred_counts(rnd, conv, eff):
            # Give it to the preferred agent, or keep waiting for them (they are marked when they have room).
            _give_to_preferred(rnd, conversation_id, conv, eff)
            if conversation_id in rnd.taken:
                work.held.add(conversation_id)  # looked at again once the decision is folded
            continue
        found = best_agent(rnd, eff, eff_.tier_ceiling(state, eff), conv)
        if found is not None:
            agent_id, agent, level = found
            prio = eff_.priority(conv, sig, eff, rnd.now_ts, rnd.policy.aging_seconds)
            rnd.give(conversation_id, conv, agent_id, agent, rule="best_fit", priority=prio, level=level)
            work.held.add(conversation_id)
        else:
            # Nobody to wait for and nobody free: it joins the general queue.
            event = EscalationStepReached(
                at=rnd.now,
                customer_id=conv.customer_id,
                conversation_id=conversation_id,
                step=0,
                relaxation=DROP_PREFERRED,
            )
            rnd.emit(event, conv.subject_seq, conversation_id)


def _route_agents(rnd: Round, work: PendingWork) -> None:
    state = rnd.state
    for agent_id in _take_marks(rnd, work, "agents"):
        agent = state.agents.get(agent_id)
        if agent is None or agent.status != "available" or agent_id in rnd.withdrawn:
            continue
        made = len(rnd.decisions)
        _fill_agent(rnd, agent_id, agent)
        if len(rnd.decisions) > made:
            work.agents.add(agent_id)  # it may have room left once these are folded


def _fill_agent(rnd: Round, agent_id: str, agent: AgentView) -> None:
    """Give an agent with free slots its held conversations, then the best waiting work."""
    state = rnd.state
    held = state.held.get(agent_id)
    for entry in list(in_order(held)) if held else ():
        if rnd.full():
            return
        conversation_id = entry[1]
        if not conversation_valid(state, entry) or conversation_id in rnd.taken:
            continue
        conv = state.conversations[conversation_id]
        eff = eff_.effective(signature(state, conv), rnd.policy)
        if conv.is_held() and _preferred_counts(rnd, conv, eff):
            _give_to_preferred(rnd, conversation_id, conv, eff)
    # Across channels too, the most urgent work first (an overall cap makes channels compete).
    capacity, load = agent.profile.capacity, agent.load
    while not rnd.full():
        best: Candidate | None = None
        for channel, slots in capacity.items():
            # ``Round.room``'s first test inlined: a freed agent is full on most channels.
            if slots - load.get(channel, 0) > 0 and rnd.room(agent_id, agent, channel) > 0:
                found = best_waiting_for(rnd, agent_id, agent, channel)
                if found is not None and (best is None or found.rank < best.rank):
                    best = found
        if best is None:
            return
        # The work this agent found goes to the best free agent for it: with several
        # agents freed at once, the agent ranking decides, not the order they are looked at.
        chosen = best_agent(rnd, best.eff, rnd.ceiling(best.conv.queue_key, best.eff), best.conv)
        chosen_id, chosen_agent, level = chosen or (agent_id, agent, agent.profile.skills.get(best.eff.primary, 0))
        rnd.give(
            best.conversation_id,
            best.conv,
            chosen_id,
            chosen_agent,
            rule="best_fit",
            priority=-best.rank[0],
            level=level,
        )


def _route_queues(rnd: Round, work: PendingWork) -> None:
    state = rnd.state
    todo, work.queues = work.queues, set()
    heads: list[tuple[tuple[int, float, float, str], str]] = []
    # The ranks only order the queues: one queue (a round after an arrival) needs none.
    alone = len(todo) == 1
    for key in todo:
        queue = state.queues.get(key)
        if not queue:
            continue
        # The fold keeps a queue's top live (``index_queues.leave_queue``): the walk is the fallback.
        head: Entry | None = queue[0]
        if not conversation_valid(state, queue[0]):
            head = next((e for e in in_order(queue) if conversation_valid(state, e)), None)
        if head is None:
            continue
        if alone:
            heads.append((_UNRANKED, key))
            continue
        conv = state.conversations[head[1]]
        heads.append((rnd.rank(conv, state.queue_signatures[key], rnd.queue_effective(key), head[1]), key))
    heads.sort()
    for n, (_, key) in enumerate(heads):
        if rnd.full():
            work.queues.update(key for _, key in heads[n:])
            return
        if _route_queue(rnd, key) > 0:
            work.queues.add(key)  # looked at again once these decisions are folded


_UNRANKED = (0, 0.0, 0.0, "")


def _route_queue(rnd: Round, key: str) -> int:
    """Give the queue's conversations, in order, to the best free agents; stop when nobody fits."""
    state = rnd.state
    sig = state.queue_signatures[key]
    eff = rnd.queue_effective(key)
    ceiling = rnd.ceiling(key, eff)
    made = 0
    failures = 0
    for entry in in_order(state.queues[key]):
        if rnd.full():
            break
        conversation_id = entry[1]
        if not conversation_valid(state, entry) or conversation_id in rnd.taken:
            continue
        conv = state.conversations[conversation_id]
        found = best_agent(rnd, eff, ceiling, conv)
        if found is None:
            failures += 1
            if not conv.excluded or failures >= EXCLUDED_FAILURES:
                break  # without exclusions, nobody fits any of this queue
            continue
        agent_id, agent, level = found
        prio = eff_.priority(conv, sig, eff, rnd.now_ts, rnd.policy.aging_seconds)
        rnd.give(conversation_id, conv, agent_id, agent, rule="best_fit", priority=prio, level=level)
        made += 1
    return made
