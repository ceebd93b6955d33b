"""The ``[[agents]]`` tables: the agents a deployment seeds (``relaydesk up`` and the
router's roster at start), their levels and room, and the demo roster used when none is given."""

from __future__ import annotations

from typing import Annotated

import msgspec

from events.model import AgentProfile
from router.policy import AgentTier

# An agent's levels and room, as the API takes them too (services.api.agents.profile_problem).
# The room: bounds no contact centre reaches but that stop nonsense (a number meant for another
# field, a runaway script), for one channel and for all channels together.
MAX_SLOTS = 1000
Level = Annotated[int, msgspec.Meta(ge=1, le=5)]
Slots = Annotated[int, msgspec.Meta(ge=0, le=MAX_SLOTS)]


class AgentSeed(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    name: str = ""
    skills: dict[str, Level] = {}
    languages: dict[str, Level] = {}
    tier: AgentTier = 1
    capacity: dict[str, Slots] = {}
    max_total: Slots | None = None
    status: str = "available"
    # Where her calls ring (voice): "client:<identity>", "sip:<uri>" or "+E164".
    voice: str = ""

    def profile(self) -> AgentProfile:
        base = AgentProfile()
        return AgentProfile(
            name=self.name or self.id,
            skills=dict(self.skills),
            languages=dict(self.languages),
            tier=self.tier,
            capacity={**base.capacity, **self.capacity},
            max_total=self.max_total,
            voice=self.voice,
        )


DEMO_ROSTER: tuple[AgentSeed, ...] = (
    AgentSeed(id="ava", name="Ava (billing, EN)", skills={"billing": 3, "general": 3}, languages={"en": 5}, tier=1),
    AgentSeed(
        id="bruno",
        name="Bruno (billing, ES)",
        skills={"billing": 3, "general": 3},
        languages={"es": 5, "en": 3},
        tier=1,
    ),
    AgentSeed(
        id="chen",
        name="Chen (technical specialist, EN)",
        skills={"technical": 5, "billing": 2, "general": 4},
        languages={"en": 5},
        tier=2,
    ),
)
