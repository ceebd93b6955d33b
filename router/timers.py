"""Time-driven decisions, from ``now`` only: offer expiries, the end of a case-owner hold,
and escalation steps. Each is an event, so the timeline shows why a conversation moved.
The end of a wrap-up is no event (nothing changed but the time): decide looks at the agent
again, and the work she then takes says why."""

from __future__ import annotations

import heapq

from events.model import EscalationStepReached, OfferExpired
from router import policy as p
from router.heaps import in_order
from router.index import conversation_valid, offer_valid
from router.matching import Round


def hold_seconds(policy: p.RouterPolicy) -> float:
    """How long a conversation is held for its preferred agent: the case-owner wait, or the
    first drop_preferred step if that comes sooner."""
    drops = [step.after_seconds for step in policy.escalation_steps if step.relaxation == p.DROP_PREFERRED]
    return min([policy.case_owner_wait_seconds, *drops])


def expire_offers(rnd: Round) -> None:
    state = rnd.state
    # Most rounds nothing is due: the earliest timer says so without a walk (the same for each below).
    if not state.offer_timers or state.offer_timers[0][0] > rnd.now_ts:
        return
    for entry in in_order(state.offer_timers):
        if entry[0] > rnd.now_ts or rnd.full():
            return
        conversation_id = entry[1]
        if not offer_valid(state, entry) or conversation_id in rnd.taken:
            continue
        conv = state.conversations[conversation_id]
        if conv.agent_id is None:
            continue
        event = OfferExpired(
            at=rnd.now, customer_id=conv.customer_id, conversation_id=conversation_id, agent_id=conv.agent_id
        )
        rnd.emit(event, conv.subject_seq, conversation_id)


def end_wrap_ups(rnd: Round) -> None:
    """Agents whose wrap-up ended by ``now`` are looked at again (they may have room now).

    Per channel the wrap-up lasts the same, so each channel's heap ends in resolution order."""
    work = rnd.state.pending
    if not work.wrap_ups:
        return
    for channel in sorted(work.wrap_ups):
        heap = work.wrap_ups[channel]
        seconds = rnd.policy.wrap_up_seconds.get(channel, 0.0)
        while heap and heap[0][0] + seconds <= rnd.now_ts:
            work.agents.add(heapq.heappop(heap)[1])
        if not heap:
            del work.wrap_ups[channel]


def end_holds(rnd: Round) -> None:
    """A conversation held for its preferred agent past the hold routes to anyone (step 0)."""
    state = rnd.state
    if not state.held_timers:
        return
    cutoff = rnd.now_ts - hold_seconds(rnd.policy)
    if state.held_timers[0][0] > cutoff:
        return
    for entry in in_order(state.held_timers):
        if entry[0] > cutoff or rnd.full():
            return
        _step(rnd, entry, 0, p.DROP_PREFERRED)


def reach_steps(rnd: Round) -> None:
    steps = rnd.policy.escalation_steps
    for reached, timers in sorted(rnd.state.step_timers.items()):
        if reached >= len(steps):
            continue  # no step left for these
        step = steps[reached]
        cutoff = rnd.now_ts - step.after_seconds
        if not timers or timers[0][0] > cutoff:
            continue
        for entry in in_order(timers):
            if entry[0] > cutoff or rnd.full():
                break
            _step(rnd, entry, reached + 1, step.relaxation)


def _step(rnd: Round, entry: tuple[float, str, int], step: int, relaxation: str) -> None:
    state = rnd.state
    conversation_id = entry[1]
    if not conversation_valid(state, entry) or conversation_id in rnd.taken:
        return
    conv = state.conversations[conversation_id]
    if conv.status != "waiting":
        return
    event = EscalationStepReached(
        at=rnd.now, customer_id=conv.customer_id, conversation_id=conversation_id, step=step, relaxation=relaxation
    )
    rnd.emit(event, conv.subject_seq, conversation_id)
