"""Which escalation step a waiting conversation waits for next.

A step whose relaxation changes nothing about who may take a conversation (a fallback
language when it is already in that language, a lower skill level when every level is 1)
is not recorded for it: under a backlog every waiting conversation reached every step, and
those events were most of the log. The conversation waits for the next step that does
change something, and reaching that one records it with its number, so ``conv.step`` still
counts every step before it (``router.effective`` applies ``escalation_steps[:step]``).

What a step changes is judged from the queue signature and the policy alone (never from who
is on shift, which changes under it): the two ``Effective`` requirements either side of the
step are compared. ``drop_preferred`` and ``forgive_declines`` act on the conversation itself
(its preferred agent, its declines), so they are always recorded.

The plan depends on the policy, so it is decide's, kept beside the state (not snapshotted):
``ensure`` files every waiting conversation's step timer again when decide first runs with a
policy, and the fold files new waits through the plan it finds on the state.
"""

from __future__ import annotations

import heapq
from dataclasses import replace

import msgspec

from router import policy as p
from router.effective import effective
from router.state import QueueSignature, RouterState

# Relaxations that act on the conversation rather than on its requirements.
_ALWAYS_RECORDED = frozenset({p.DROP_PREFERRED, p.FORGIVE_DECLINES})
# Queue keys remembered per plan; the signatures in use are few, but a long run meets many.
_MAX_REMEMBERED = 65_536


class StepPlan:
    """The next step that changes something, per queue signature, under one policy."""

    __slots__ = ("_next", "policy")

    def __init__(self, policy: p.RouterPolicy) -> None:
        self.policy = policy
        self._next: dict[str, int] = {}

    def next_step(self, key: str, sig: QueueSignature) -> int:
        """The index in ``escalation_steps`` this queue's conversations wait for next
        (``len(escalation_steps)`` when none is left that would change anything)."""
        found = self._next.get(key)
        if found is None:
            if len(self._next) >= _MAX_REMEMBERED:
                self._next.clear()
            found = self._next[key] = first_step_that_matters(sig, self.policy)
        return found


def first_step_that_matters(sig: QueueSignature, policy: p.RouterPolicy) -> int:
    steps = policy.escalation_steps
    index = sig.step
    while index < len(steps) and changes_nothing(sig, index, policy):
        index += 1
    return index


def changes_nothing(sig: QueueSignature, index: int, policy: p.RouterPolicy) -> bool:
    """Whether reaching ``escalation_steps[index]`` leaves the requirements as they are."""
    if policy.escalation_steps[index].relaxation in _ALWAYS_RECORDED:
        return False
    before = effective(msgspec.structs.replace(sig, step=index), policy)
    after = effective(msgspec.structs.replace(sig, step=index + 1), policy)
    return replace(before, step=0) == replace(after, step=0)


def ensure(state: RouterState, policy: p.RouterPolicy) -> None:
    """Make the state's plan the one for ``policy``; file the step timers again if it changed."""
    plan = state.step_plan
    if plan is not None and (plan.policy is policy or plan.policy == policy):
        plan.policy = policy
        return
    plan = StepPlan(policy)
    state.step_plan = plan
    timers: dict[int, list[tuple[float, str, int]]] = {}
    for conversation_id, conv in state.conversations.items():
        if conv.status != "waiting" or not conv.queue_key:
            continue  # held conversations wait on their hold's timer, not on steps
        sig = state.queue_signatures[conv.queue_key]
        since = conv.waiting_since.timestamp() if conv.waiting_since else 0.0
        timers.setdefault(plan.next_step(conv.queue_key, sig), []).append((since, conversation_id, conv.enqueued))
    for heap in timers.values():
        heapq.heapify(heap)
    state.step_timers = timers
