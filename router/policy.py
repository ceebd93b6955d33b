"""Routing policy settings: plain data, decoded from the [router] table of the config.

Every field has a default, so an empty ``[router]`` table gives the shipped policy. The
config loader decodes it with ``msgspec.convert(table, RouterPolicy, strict=False)``.
"""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

# What a setting can mean, checked when the policy is decoded (a config with ``sla_seconds =
# { sms = -5 }`` or an agent tier of 9 is refused at load, naming the key and the range).
Seconds = Annotated[float, msgspec.Meta(gt=0)]  # ``inf`` included (no SLA)
Wait = Annotated[float, msgspec.Meta(ge=0)]  # 0: none, or off
Count = Annotated[int, msgspec.Meta(ge=0)]
AgentTier = Annotated[int, msgspec.Meta(ge=1, le=3)]  # frontline, specialist, supervisor
AGENT_TIERS = range(1, 4)  # the same, for the fold (``router.fold.refuse_tier``)

# Relaxations an escalation step may apply (``EscalationStep.relaxation``).
DROP_PREFERRED = "drop_preferred"  # stop holding the conversation for its case owner / transfer target
LOWER_SKILL_MIN = "lower_skill_min"  # every required skill level minus one (never below 1)
ALLOW_TIER_UP = "allow_tier_up"  # the tier ceiling rises by one (see RouterPolicy.tier_headroom)
FALLBACK_LANGUAGE = "fallback_language"  # accept the conversation's fallback languages (or the policy's)
ANY_AGENT_WITH_SKILL = "any_agent_with_skill"  # skills at level 1, any language, no tier ceiling
# The minimum agent tier that the customer's tier and flags ask for drops by one (never below
# 1, nor below a tier the requirements or a transfer name): a VIP is served by the next tier
# down rather than waiting for a specialist without a time limit. Not among the default steps.
LOWER_TIER_MIN = "lower_tier_min"
# Agents excluded so far because they declined or let the offer expire may be offered it
# again (exclusions named in the requirements or by a transfer stay). Applied by the fold.
FORGIVE_DECLINES = "forgive_declines"
RELAXATIONS = (
    DROP_PREFERRED,
    LOWER_SKILL_MIN,
    ALLOW_TIER_UP,
    FALLBACK_LANGUAGE,
    ANY_AGENT_WITH_SKILL,
    FORGIVE_DECLINES,
    LOWER_TIER_MIN,
)


class EscalationStep(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Reached when a conversation has waited ``after_seconds`` since it started waiting
    (cumulative, not since the previous step) and is still not offered or assigned."""

    after_seconds: Wait
    relaxation: str


class CustomerTierRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    priority_boost: int = 0
    min_agent_tier: AgentTier = 1


def _default_sla() -> dict[str, float]:
    return {"chat": 60.0, "sms": 300.0, "social": 900.0, "email": 14_400.0, "voice": 20.0}


def _default_tiers() -> dict[str, CustomerTierRule]:
    return {
        "standard": CustomerTierRule(priority_boost=0, min_agent_tier=1),
        "gold": CustomerTierRule(priority_boost=10, min_agent_tier=1),
        "platinum": CustomerTierRule(priority_boost=20, min_agent_tier=2),
    }


DEFAULT_STEPS: tuple[EscalationStep, ...] = (
    EscalationStep(after_seconds=30, relaxation=ALLOW_TIER_UP),
    EscalationStep(after_seconds=60, relaxation=FALLBACK_LANGUAGE),
    EscalationStep(after_seconds=120, relaxation=LOWER_SKILL_MIN),
    EscalationStep(after_seconds=300, relaxation=ANY_AGENT_WITH_SKILL),
    EscalationStep(after_seconds=600, relaxation=FORGIVE_DECLINES),
)


class RouterPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # --- offers -------------------------------------------------------------------
    # Channels whose conversations are offered (accept/decline); the others are assigned directly.
    offer_channels: tuple[str, ...] = ("chat", "sms", "social")
    offer_timeout_seconds: Seconds = 30.0
    # An available agent who lets this many offers in a row expire is set away (0: never).
    expiries_before_away: Count = 3

    # --- queue order ----------------------------------------------------------------
    # Seconds after the conversation started waiting by which an agent should have it.
    # Merged per channel over the defaults (like an agent's ``capacity``): naming a channel
    # replaces that channel's value only; ``inf`` removes its SLA (see __post_init__).
    sla_seconds: dict[str, Seconds] = msgspec.field(default_factory=_default_sla)
    # Aging: one priority point per this many seconds waited, so nothing starves (0: off).
    aging_seconds: Wait = 60.0
    # Customer tiers: priority boost and minimum agent tier. Unknown tiers count as none.
    customer_tiers: dict[str, CustomerTierRule] = msgspec.field(default_factory=_default_tiers)
    # Customer flags that send a conversation to ``flag_min_tier`` or above at ``flag_priority``.
    priority_flags: tuple[str, ...] = ("regulatory_risk", "media_attention", "executive_escalation")
    flag_min_tier: AgentTier = 2
    flag_priority: int = 1000
    # Public posts (social) are seen by everyone: a priority boost.
    public_boost: int = 5

    # --- choice of agent ------------------------------------------------------------
    # The case owner: a returning customer's open conversation's agent, or the agent of a
    # conversation resolved at most this long ago.
    case_owner_window_seconds: Wait = 72 * 3600.0
    # How long a conversation is held for its case owner (or transfer target) to have room
    # before it routes to anyone eligible.
    case_owner_wait_seconds: Wait = 30.0
    # Among eligible agents of the lowest fitting tier: "highest" skill level first, or
    # "closest" (the lowest level that meets the minimum, keeping experts free).
    skill_fit: str = "highest"
    # The tier ceiling: a conversation goes to the lowest tier that has an available agent
    # able to take it ("natural tier") plus this headroom, plus one per allow_tier_up step.
    # So a specialist is not spent on frontline work while a frontline agent is on shift.
    tier_headroom: Count = 0
    # Languages accepted after a fallback_language step when the conversation names none.
    fallback_languages: tuple[str, ...] = ("en",)
    escalation_steps: tuple[EscalationStep, ...] = DEFAULT_STEPS

    # --- transfers and agent state --------------------------------------------------
    # The transfer that makes the count reach this goes to ``specialist_tier`` or above.
    specialist_after_transfers: Count = 3
    specialist_tier: AgentTier = 2
    # An agent going offline hands back conversations on these channels (and every pending offer).
    release_on_offline: tuple[str, ...] = ("chat", "sms", "social")
    # Wrap-up time per channel: after an agent's conversation on that channel is resolved,
    # its slot stays taken this many seconds before new work (a channel not named: none).
    wrap_up_seconds: dict[str, Wait] = msgspec.field(default_factory=dict)
    # Cross-channel rule (router.cross_channel): while an agent holds work on one of these
    # channels she gets no new work on any channel; and she gets work there only while she
    # holds at most ``exclusive_max_other_load`` conversations elsewhere (None: no limit).
    exclusive_channels: tuple[str, ...] = ("voice",)
    exclusive_max_other_load: Count | None = None

    # --- work per call ----------------------------------------------------------------
    # Upper bound of decisions in one decide call, so one call stays short under a burst.
    max_decisions_per_call: Annotated[int, msgspec.Meta(ge=1)] = 1000

    def __post_init__(self) -> None:
        unknown = [step.relaxation for step in self.escalation_steps if step.relaxation not in RELAXATIONS]
        if unknown:  # a typo would otherwise be a step that relaxes nothing
            raise ValueError(f"unknown escalation relaxation {unknown[0]!r} (known: {', '.join(RELAXATIONS)})")
        # ``sla_seconds = { telegram = 300 }`` used to drop every built-in channel's SLA while
        # ``capacity = { telegram = 3 }`` kept the built-in capacities: both merge now.
        # ``inf`` takes a channel out (no SLA: what a channel not named has).
        merged = {**_default_sla(), **self.sla_seconds}
        msgspec.structs.force_setattr(
            self, "sla_seconds", {ch: sec for ch, sec in merged.items() if math.isfinite(sec)}
        )
