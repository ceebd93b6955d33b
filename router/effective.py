"""Policy applied to a queue signature: who may take the conversation, and how urgent it is.

The fold files conversations by facts only (``QueueSignature``); this module turns those
facts into effective requirements under a ``RouterPolicy``: escalation relaxations,
customer tier and flags, the transfer rule, and the tier ceiling that keeps specialists
for work frontline agents on shift cannot take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from router import policy as p
from router.index import MAX_LEVEL, agent_key
from router.state import ANY, AgentView, ConversationView, QueueSignature, RouterState

UNBOUNDED_TIER = 1_000


@dataclass(frozen=True, slots=True)
class Effective:
    """Effective requirements of one queue (policy applied, tier ceiling not yet)."""

    channel: str
    skills: dict[str, int]
    primary: str  # the skill agents are looked up by; '*' when no skill is required
    primary_min: int
    languages: tuple[str, ...] | None  # None: any language
    min_tier: int
    tier_ups: int  # allow_tier_up steps reached (plus the policy's headroom)
    unbounded: bool  # any_agent_with_skill reached: no tier ceiling
    boost: int  # priority added by customer tier, flags and public posts
    sla_seconds: float
    step: int


def effective(sig: QueueSignature, policy: p.RouterPolicy) -> Effective:
    reached = [step.relaxation for step in policy.escalation_steps[: sig.step]]
    skills = dict(sig.skills)
    widened = p.ANY_AGENT_WITH_SKILL in reached
    if widened:
        skills = dict.fromkeys(skills, 1)
    elif lowered := reached.count(p.LOWER_SKILL_MIN):
        skills = {name: max(1, level - lowered) for name, level in skills.items()}
    primary, primary_min = max(skills.items(), key=lambda item: (item[1], item[0])) if skills else (ANY, 0)

    languages: tuple[str, ...] | None = None
    if sig.language is not None and not widened:
        languages = (sig.language,)
        if p.FALLBACK_LANGUAGE in reached:
            fallbacks = sig.fallback_languages or policy.fallback_languages
            languages += tuple(lang for lang in fallbacks if lang != sig.language)

    tier_rule = policy.customer_tiers.get(sig.customer_tier)
    flagged = any(flag in policy.priority_flags for flag in sig.flags)
    transferred_out = 0 < policy.specialist_after_transfers <= sig.transfers
    # What the customer's tier and flags ask for relaxes with ``lower_tier_min``; a tier the
    # requirements name or a transfer asks for does not.
    customer_min = max(tier_rule.min_agent_tier if tier_rule else 1, policy.flag_min_tier if flagged else 1)
    customer_min = max(1, customer_min - reached.count(p.LOWER_TIER_MIN))
    min_tier = max(sig.min_tier, customer_min, policy.specialist_tier if transferred_out else 1)
    boost = (tier_rule.priority_boost if tier_rule else 0) + (policy.flag_priority if flagged else 0)
    if sig.public:
        boost += policy.public_boost
    return Effective(
        channel=sig.channel,
        skills=skills,
        primary=primary,
        primary_min=min(primary_min, MAX_LEVEL),
        languages=languages,
        min_tier=min_tier,
        tier_ups=policy.tier_headroom + reached.count(p.ALLOW_TIER_UP),
        unbounded=widened,
        boost=boost,
        sla_seconds=policy.sla_seconds.get(sig.channel, math.inf),
        step=sig.step,
    )


def lowest_level(minimum: int) -> int:
    """The lowest level to look for agents at, for a required ``minimum``: agents are filed
    at levels 1 to ``MAX_LEVEL`` (and '*' at 0), so nothing below 0 needs looking at. A
    requirement of level -2**62 (well-typed, on the log) made every walk from it endless."""
    return min(max(minimum, 0), MAX_LEVEL)


def levels(eff: Effective, policy: p.RouterPolicy) -> range | tuple[int, ...]:
    """Skill levels of the primary skill to look at, best fit first."""
    if eff.primary == ANY:
        return (0,)
    if policy.skill_fit == "closest":
        return range(lowest_level(eff.primary_min), MAX_LEVEL + 1)
    return range(MAX_LEVEL, lowest_level(eff.primary_min) - 1, -1)


def natural_tier(state: RouterState, eff: Effective) -> int:
    """The lowest tier (at or above the minimum) with an available agent on shift who could
    take this work, busy or not; the highest tier known when nobody could."""
    languages = eff.languages or (ANY,)
    low = range(lowest_level(eff.primary_min), MAX_LEVEL + 1) if eff.primary != ANY else (0,)
    for tier in range(eff.min_tier, state.max_agent_tier + 1):
        for language in languages:
            for level in low:
                if state.capable.get(agent_key(eff.channel, eff.primary, language, tier, level)):
                    return tier
    return max(state.max_agent_tier, eff.min_tier)


def tier_ceiling(state: RouterState, eff: Effective) -> int:
    if eff.unbounded:
        return UNBOUNDED_TIER
    return natural_tier(state, eff) + eff.tier_ups


def agent_fits(agent: AgentView, eff: Effective, ceiling: int) -> bool:
    """Skills, language and tier; not status, capacity or exclusions."""
    tier = agent.profile.tier
    if tier < eff.min_tier or tier > ceiling:
        return False
    skills = agent.profile.skills
    for name, level in eff.skills.items():
        if skills.get(name, 0) < level:
            return False
    if eff.languages is None:
        return True
    return any(language in agent.profile.languages for language in eff.languages)


def priority(conv: ConversationView, sig: QueueSignature, eff: Effective, now_ts: float, aging: float) -> int:
    """Effective priority: requirements + boosts + one point per ``aging`` seconds waited."""
    since = conv.waiting_since.timestamp() if conv.waiting_since else now_ts
    aged = int(max(0.0, now_ts - since) // aging) if aging > 0 else 0
    return sig.priority + eff.boost + aged


def sla_due(conv: ConversationView, eff: Effective) -> float:
    if conv.requirements.sla_due is not None:
        return conv.requirements.sla_due.timestamp()
    since = conv.waiting_since.timestamp() if conv.waiting_since else 0.0
    return since + eff.sla_seconds
