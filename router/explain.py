"""Why work waits: the eligible agents of a waiting conversation (or a queue) and the first
thing that keeps it from them, as a sentence a team lead can act on.

Pure like the rest of ``router``: state, policy and ``now`` in. It scans every agent
(O(agents) per conversation, O(queues x agents) for all queues), which suits an API call;
the fold and decide never call it.

Eligible: active, every required skill at the effective level, speaks an effective language
(escalation steps may widen them), tier at least the minimum, takes the channel at all
(capacity > 0 there) and not excluded. Of those: ``online`` is available (away and offline
agents take no new work), ``with_free_capacity`` online with a slot free on the channel
now (load, the overall cap and running wrap-ups counted).

The blocking reason is checked in this order (the first that holds is given):

1. offered to an agent (her answer is awaited), or held for the case owner / transfer target;
2. a required skill nobody has (``no agent has skill billing>=2``), then the combination;
3. the language (``no agent speaks de``), then the minimum tier (``no agent of tier >= 2
   speaks de``), then the channel, then exclusions;
4. ``no eligible agent is online``;
5. wrap-up (``in wrap-up until ...``) or ``every online eligible agent is at capacity on sms``;
6. the tier ceiling (free agents are all of a tier kept for harder work);
7. nothing (None): the router gives it out on its next round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from events.model import ConversationEscalated, ConversationTransferred
from router import effective as eff_
from router import wrap_up
from router.effective import Effective
from router.index import signature
from router.policy import FORGIVE_DECLINES, RouterPolicy
from router.queues import QueueSummary
from router.redirect import forgive, redirect
from router.state import AgentView, ConversationView, RouterState
from router.timers import hold_seconds


class EligibleAgents(msgspec.Struct, frozen=True, kw_only=True):
    total: int  # active agents who may take it (skills, language, tier, channel, not excluded)
    online: int  # of those, available
    with_free_capacity: int  # of those, with a free slot on the channel now


class WaitingBecause(msgspec.Struct, frozen=True, kw_only=True):
    eligible: EligibleAgents
    blocking: str | None  # the first thing keeping it from an agent; None: nothing (routed next round)


class ExplainedQueue(QueueSummary, frozen=True, kw_only=True):
    """A queue of ``GET /v1/queues``: its summary plus why its work waits."""

    eligible: EligibleAgents
    blocking: str | None


@dataclass(frozen=True, slots=True)
class _Ask:
    """What one explanation is about: requirements, channel, exclusions and the time."""

    eff: Effective
    channel: str
    excluded: frozenset[str]
    now: datetime
    policy: RouterPolicy


Roster = Sequence[tuple[str, AgentView]]
_NEVER = datetime.min.replace(tzinfo=UTC)  # eligibility does not depend on the time


def waiting_because(
    state: RouterState, conv: ConversationView, now: datetime, policy: RouterPolicy
) -> WaitingBecause | None:
    """Why a waiting or offered conversation has no agent working it; None for other statuses."""
    if conv.status not in ("waiting", "offered"):
        return None
    eff = eff_.effective(signature(state, conv), policy)
    ask = _Ask(eff, conv.channel, frozenset(conv.excluded), now, policy)
    counts, blocking = _explain(state, _roster(state), ask)
    if conv.status == "offered" and conv.agent_id is not None:
        expires = f", expires {_iso(conv.offer_expires_at)}" if conv.offer_expires_at else ""
        blocking = f"offered to {conv.agent_id}{expires}"
    elif conv.is_held() and conv.preferred_agent is not None:
        whom = "the transfer target" if conv.preferred_is_transfer else "the case owner"
        since = conv.waiting_since or now
        until = since + timedelta(seconds=hold_seconds(policy))
        blocking = f"held for {whom} {conv.preferred_agent} until {_iso(until)}"
    return WaitingBecause(eligible=counts, blocking=blocking)


def nobody_could_take(
    state: RouterState,
    conv: ConversationView,
    change: ConversationTransferred | ConversationEscalated,
    policy: RouterPolicy,
) -> str | None:
    """Why no active agent could ever be offered ``conv`` after ``change``; None when one could
    (whatever her status: she may come online). Judged as the conversation would stand at the
    last escalation step, where the policy has relaxed all it will: work that only waits for a
    fallback language or a lower skill level is not refused, work no step ever opens is."""
    after = msgspec.structs.replace(conv, excluded=list(conv.excluded), declined=list(conv.declined))
    redirect(after, change)
    after.step = len(policy.escalation_steps)
    if any(step.relaxation == FORGIVE_DECLINES for step in policy.escalation_steps):
        forgive(after)
    eff = eff_.effective(signature(state, after), policy)
    _, blocking = _eligible(_roster(state), _Ask(eff, after.channel, frozenset(after.excluded), _NEVER, policy))
    return blocking


def explained_queues(
    state: RouterState, summaries: Sequence[QueueSummary], now: datetime, policy: RouterPolicy
) -> list[ExplainedQueue]:
    """``summaries`` (``router.queues.queue_summaries``) with each queue's eligible agents and
    blocking reason. Exclusions are per conversation, so a queue's counts ignore them."""
    roster = _roster(state)
    out: list[ExplainedQueue] = []
    for summary in summaries:
        sig = state.queue_signatures.get(summary.key)
        if sig is None:
            continue
        ask = _Ask(eff_.effective(sig, policy), sig.channel, frozenset(), now, policy)
        counts, blocking = _explain(state, roster, ask)
        out.append(ExplainedQueue(**msgspec.structs.asdict(summary), eligible=counts, blocking=blocking))
    return out


def _roster(state: RouterState) -> list[tuple[str, AgentView]]:
    return sorted((agent_id, agent) for agent_id, agent in state.agents.items() if agent.active)


def _explain(state: RouterState, roster: Roster, ask: _Ask) -> tuple[EligibleAgents, str | None]:
    eligible, blocking = _eligible(roster, ask)
    now_ts = ask.now.timestamp()
    online = [(agent_id, agent) for agent_id, agent in eligible if agent.status == "available"]
    free = [(a, agent) for a, agent in online if wrap_up.room(agent, ask.channel, now_ts, ask.policy) > 0]
    counts = EligibleAgents(total=len(eligible), online=len(online), with_free_capacity=len(free))
    if blocking is not None:
        return counts, blocking
    if not online:
        away = sum(1 for _, agent in eligible if agent.status == "away")
        return counts, f"no eligible agent is online ({away} away, {len(eligible) - away} offline)"
    if not free:
        return counts, _full(online, ask)
    ceiling = _ceiling(roster, ask)
    if all(agent.profile.tier > ceiling for _, agent in free):
        return counts, (
            f"every free eligible agent is above tier {ceiling}, kept for work lower tiers on shift cannot take "
            "(the tier ceiling rises with allow_tier_up steps)"
        )
    return counts, None


def _eligible(roster: Roster, ask: _Ask) -> tuple[list[tuple[str, AgentView]], str | None]:
    """The eligible agents, and the first requirement nobody meets (None when someone does)."""
    eff = ask.eff
    if not roster:
        return [], "no agent is active"
    for name, level in sorted(eff.skills.items()):
        if not any(agent.profile.skills.get(name, 0) >= level for _, agent in roster):
            return [], f"no agent has skill {name}>={level}"
    skills = " and ".join(f"{name}>={level}" for name, level in sorted(eff.skills.items()))
    skilled = [(a, agent) for a, agent in roster if _has_skills(agent, eff.skills)]
    if not skilled:
        return [], f"no agent has skills {skills}"
    speaking = skilled
    languages = " or ".join(eff.languages) if eff.languages is not None else ""
    if eff.languages is not None:
        speaking = [(a, agent) for a, agent in skilled if _speaks(agent, eff.languages)]
        if not speaking:
            if not any(_speaks(agent, eff.languages) for _, agent in roster):
                return [], f"no agent speaks {languages}"
            return [], f"no agent with {skills} speaks {languages}"
    tiered = [(a, agent) for a, agent in speaking if agent.profile.tier >= eff.min_tier]
    if not tiered:
        what = f"speaks {languages}" if languages else (f"has {skills}" if skills else "")
        return [], f"no agent of tier >= {eff.min_tier} {what}".rstrip()
    working = [(a, agent) for a, agent in tiered if agent.profile.capacity.get(ask.channel, 0) > 0]
    if not working:
        return [], f"no agent who qualifies takes {ask.channel} (capacity 0 there)"
    eligible = [(a, agent) for a, agent in working if a not in ask.excluded]
    if not eligible:
        names = ", ".join(a for a, _ in working)
        return [], f"every qualified agent is excluded (declined, let the offer expire or transferred away): {names}"
    return eligible, None


def _has_skills(agent: AgentView, skills: dict[str, int]) -> bool:
    return all(agent.profile.skills.get(name, 0) >= level for name, level in skills.items())


def _speaks(agent: AgentView, languages: tuple[str, ...]) -> bool:
    return any(language in agent.profile.languages for language in languages)


def _full(online: Roster, ask: _Ask) -> str:
    """Every online eligible agent lacks a free slot: say whether a wrap-up is what holds it."""
    now_ts = ask.now.timestamp()
    no_wrap = msgspec.structs.replace(ask.policy, wrap_up_seconds={})
    wrapping: list[tuple[float, str]] = []
    for agent_id, agent in online:
        if wrap_up.room(agent, ask.channel, now_ts, no_wrap) > 0:
            end = wrap_up.first_end(agent, ask.channel, now_ts, ask.policy)
            if end is not None:
                wrapping.append((end, agent_id))
    full = f"every online eligible agent is at capacity on {ask.channel}"
    if not wrapping:
        return full
    end, agent_id = min(wrapping)
    message = f"in wrap-up until {_iso(datetime.fromtimestamp(end, UTC))} ({agent_id})"
    if len(wrapping) < len(online):
        message += f"; the other online eligible agents are at capacity on {ask.channel}"
    return message


def _ceiling(roster: Roster, ask: _Ask) -> int:
    """The tier ceiling as decide works it out (``effective.tier_ceiling``), from the agents
    themselves: a read model keeps no on-shift index."""
    eff = ask.eff
    if eff.unbounded:
        return eff_.UNBOUNDED_TIER
    tiers = [
        agent.profile.tier
        for _, agent in roster
        if agent.status == "available"
        and agent.profile.tier >= eff.min_tier
        and agent.profile.capacity.get(ask.channel, 0) > 0
        and (eff.primary == "*" or agent.profile.skills.get(eff.primary, 0) >= eff.primary_min)
        and (eff.languages is None or _speaks(agent, eff.languages))
    ]
    natural = min(tiers) if tiers else max([eff.min_tier, *(agent.profile.tier for _, agent in roster)])
    return natural + eff.tier_ups


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return "?"
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
