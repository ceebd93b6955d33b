"""What is waiting, per queue: the read model behind ``GET /v1/queues``.

Pure like the rest of ``router``: give it the state, the time and the policy. It walks
every waiting conversation once (O(waiting)), which suits an API call, not a hot path.
"""

from __future__ import annotations

import math

import msgspec

from router import effective as eff_
from router.index import conversation_valid
from router.policy import RouterPolicy
from router.state import RouterState


class QueueSummary(msgspec.Struct, frozen=True, kw_only=True):
    key: str  # the queue signature key (stable while the queue has members)
    channel: str
    skills: dict[str, int]  # as required now (relaxations applied)
    language: str | None
    languages: tuple[str, ...] | None  # accepted now (None: any)
    min_tier: int
    customer_tier: str
    flags: tuple[str, ...]
    public: bool
    priority: int  # requirement priority plus tier, flag and public boosts (before aging)
    step: int  # escalation steps reached
    waiting: int
    oldest_wait_seconds: float
    sla_at_risk: int  # due within ``risk_share`` of the channel's SLA, not yet breached
    sla_breached: int


class HeldSummary(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str  # the case owner or transfer target they wait for
    waiting: int
    oldest_wait_seconds: float


def queue_summaries(
    state: RouterState, now_ts: float, policy: RouterPolicy, *, risk_share: float = 0.25
) -> list[QueueSummary]:
    """Every non-empty queue, most urgent first (priority, then oldest wait)."""
    out: list[QueueSummary] = []
    for key, heap in state.queues.items():
        sig = state.queue_signatures[key]
        eff = eff_.effective(sig, policy)
        waiting = at_risk = breached = 0
        oldest = now_ts
        for entry in heap:
            if not conversation_valid(state, entry):
                continue
            conv = state.conversations[entry[1]]
            waiting += 1
            since = conv.waiting_since.timestamp() if conv.waiting_since else now_ts
            oldest = min(oldest, since)
            due = eff_.sla_due(conv, eff)
            # A channel without an SLA (inf) puts nothing at risk; a due time of its own is at
            # risk in the last ``risk_share`` of its own span. (inf <= inf counted every one.)
            span = eff.sla_seconds if math.isfinite(eff.sla_seconds) else due - since
            if due <= now_ts:
                breached += 1
            elif math.isfinite(due) and due - now_ts <= risk_share * span:
                at_risk += 1
        if waiting == 0:
            continue
        out.append(
            QueueSummary(
                key=key,
                channel=sig.channel,
                skills=eff.skills,
                language=sig.language,
                languages=eff.languages,
                min_tier=eff.min_tier,
                customer_tier=sig.customer_tier,
                flags=sig.flags,
                public=sig.public,
                priority=sig.priority + eff.boost,
                step=sig.step,
                waiting=waiting,
                oldest_wait_seconds=round(now_ts - oldest, 3),
                sla_at_risk=at_risk,
                sla_breached=breached,
            )
        )
    out.sort(key=lambda q: (-q.priority, -q.oldest_wait_seconds, q.key))
    return out


def queue_depth(state: RouterState, key: str, now_ts: float) -> tuple[int, float]:
    """One queue's waiting conversations and its oldest wait in seconds (the router's gauges):
    O(the queue's entries), without the policy and SLA work of ``queue_summaries``."""
    waiting, oldest = 0, now_ts
    conversations = state.conversations
    for entry in state.queues.get(key, ()):
        conv = conversations.get(entry[1])
        if conv is None or conv.enqueued != entry[2]:
            continue
        waiting += 1
        if conv.waiting_since is not None:
            oldest = min(oldest, conv.waiting_since.timestamp())
    return waiting, round(now_ts - oldest, 3)


def held_summaries(state: RouterState, now_ts: float) -> list[HeldSummary]:
    """Conversations held for a preferred agent, per agent."""
    out: list[HeldSummary] = []
    for agent_id, heap in sorted(state.held.items()):
        live = [entry for entry in heap if conversation_valid(state, entry)]
        if live:
            oldest = min(entry[0] for entry in live)
            out.append(HeldSummary(agent_id=agent_id, waiting=len(live), oldest_wait_seconds=round(now_ts - oldest, 3)))
    return out
