"""Agents: profiles, status and load, read from the live routing view; profile changes,
deactivation and reactivation, appended on the agent's subject.

``PUT`` and ``PATCH /v1/agents/{id}`` both keep what the body does not name: the new profile
is the current one (a new agent: the defaults) with the named fields changed. ``skills`` and
``languages``, when named, replace the agent's whole map (so a skill can be removed);
``capacity`` changes only the channels it names (0 closes a channel); ``max_total: null``
lifts the overall cap. Each change reads the agent's subject's last sequence and appends with
it as the expected one, so two concurrent changes never lose one another's fields. A change
that changes nothing (a retry, an empty body) appends nothing (found by a retry audit: each
repeat wrote another ``AgentProfileUpdated``).
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from aiohttp import web
from msgspec import UNSET, UnsetType

from events import subjects
from events.model import (
    AgentDeactivated,
    AgentProfile,
    AgentProfileUpdated,
    AgentReactivated,
    AgentStatusChanged,
    LogEvent,
)
from events.store import ConcurrencyError
from router.state import AgentView
from services.api import paging
from services.api.common import (
    ACTOR,
    AGENT_STATUSES,
    TIERS,
    ApiDeps,
    Body,
    EmptyBody,
    StatusField,
    TierField,
    id_problem,
    json_error,
    name_problem,
    ok,
    read_body,
)
from services.api.views import agent_json
from services.config_agents import MAX_SLOTS

log = structlog.get_logger(__name__)

# Attempts at a guarded append before answering 409 (another change kept landing first).
CONFLICT_RETRIES = 5
# Conversations at once on one channel, and on all channels together (as in the config file).
MAX_CAPACITY = MAX_TOTAL = MAX_SLOTS


class StatusBody(Body):
    status: StatusField
    reason: str = ""


class AgentChanges(Body):
    """A profile change: only the fields named change. A misspelt field is refused (400)
    rather than ignored, since ignoring it would silently change nothing."""

    name: str | UnsetType = UNSET
    skills: dict[str, int] | UnsetType = UNSET  # replaces the agent's skills
    languages: dict[str, int] | UnsetType = UNSET  # replaces the agent's languages
    tier: TierField | UnsetType = UNSET
    capacity: dict[str, int] | UnsetType = UNSET  # per channel: the channels named change
    max_total: int | UnsetType | None = UNSET  # null: no overall cap
    voice: str | UnsetType = UNSET  # where calls ring: "client:<id>", "sip:<uri>", "+E164"; "" unsets

    def named(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET}

    def applied_to(self, current: AgentProfile) -> AgentProfile:
        named = self.named()
        if "capacity" in named:
            named["capacity"] = {**current.capacity, **named["capacity"]}
        return msgspec.structs.replace(current, **named)


class DeactivateBody(Body):
    reason: str = ""


def profile_problem(profile: AgentProfile) -> str | None:
    if problem := name_problem(profile.name):
        return problem
    if profile.tier not in TIERS:
        return "tier must be 1 (frontline), 2 (specialist) or 3 (supervisor)"
    if any(not 1 <= level <= 5 for level in profile.skills.values()):
        return "skill levels go from 1 to 5"
    if any(not 1 <= level <= 5 for level in profile.languages.values()):
        return "language levels go from 1 to 5"
    for channel, cap in profile.capacity.items():
        if not 0 <= cap <= MAX_CAPACITY:
            return f"capacity on {channel} goes from 0 to {MAX_CAPACITY} (0 closes the channel), not {cap}"
    if profile.max_total is not None and not 0 <= profile.max_total <= MAX_TOTAL:
        return f"max_total goes from 0 to {MAX_TOTAL} (null: no overall cap), not {profile.max_total}"
    return voice_endpoint_problem(profile.voice)


def voice_endpoint_problem(voice: str) -> str | None:
    """Where connectors.voice bridges the agent's calls (``<Dial>``); "" for none."""
    if not voice:
        return None
    kind, _, rest = voice.partition(":")
    if any(c.isspace() or ord(c) < 32 for c in voice) or len(voice) > 256:
        return "voice must have no spaces or control characters and at most 256 characters"
    if kind.lower() == "client" and rest and all(c.isalnum() or c in "_-.@" for c in rest):
        return None
    if kind.lower() in ("sip", "sips") and "@" in rest:
        return None
    number = voice.removeprefix("tel:")
    if number.startswith("+") and number[1:].isdigit() and 8 <= len(number) <= 16:
        return None
    return (
        f"voice must be a Twilio Client identity (client:ava), a SIP address (sip:ava@pbx.example.com)"
        f" or an E.164 phone number (+15553334444), not {voice!r}"
    )


def is_active(agent: AgentView) -> bool:
    # ``AgentView.active`` is folded by the router from AgentDeactivated / AgentReactivated;
    # read defensively so a view snapshotted before the field existed reads as active.
    return bool(getattr(agent, "active", True))


def _by_id(item: tuple[str, AgentView]) -> tuple[str]:
    return (item[0],)


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    async def guarded(aid: str) -> int:
        """The agent subject's last sequence, once the live view has folded it."""
        last = await deps.store.last_subject_seq(subjects.agent(aid))
        await deps.has_read(last)
        return last

    async def change_profile(request: web.Request) -> web.Response:
        aid = request.match_info["id"]
        if problem := id_problem("agent", aid):
            return json_error(400, problem)
        changes = await read_body(request, AgentChanges)
        if changes.capacity is not UNSET and (refusal := deps.registry.unknown_channels(changes.capacity)):
            return json_error(400, refusal.reason, **refusal.extra("channel"))
        if changes.skills is not UNSET and (refusal := deps.registry.unknown_skills(changes.skills)):
            return json_error(400, refusal.reason, **refusal.extra("skill"))
        if changes.languages is not UNSET and (refusal := deps.registry.unknown_languages(changes.languages)):
            return json_error(400, refusal.reason, **refusal.extra("language"))
        for _ in range(CONFLICT_RETRIES):
            last = await guarded(aid)
            current = deps.live.state.agents.get(aid)
            # A new agent starts from the defaults (every shipped channel open).
            profile = changes.applied_to(current.profile if current is not None else AgentProfile())
            problem = profile_problem(profile)
            if problem:
                return json_error(400, problem)
            if current is not None and profile == current.profile:
                # Nothing changes (a retry, an empty body): nothing appended, as for a customer.
                return ok(agent_json(aid, current))
            event = AgentProfileUpdated(at=deps.clock(), agent_id=aid, profile=profile, actor=request[ACTOR])
            try:
                await deps.append(event, last)
            except ConcurrencyError:
                continue  # another change landed first: apply ours to it
            log.info("api.agent_profile_changed", agent_id=aid, fields=sorted(changes.named()), actor=request[ACTOR])
            return ok(agent_json(aid, deps.live.state.agents[aid]), status=201 if current is None else 200)
        return json_error(409, f"agent {aid} kept changing meanwhile; try again")

    @r.get("/v1/agents")
    async def list_agents(request: web.Request) -> web.Response:
        # By id, a page at a time (services.api.paging): 10,000 agents were one answer of
        # megabytes, fetched every 3 s by each supervisor page.
        after = paging.cursor_of(request, (str,))
        found = paging.page(deps.live.state.agents.items(), _by_id, after, paging.limit_of(request))
        agents = [agent_json(aid, agent) for aid, agent in found.items]
        return ok({"agents": agents, "count": len(agents), "total": found.total, "next_cursor": found.next_cursor})

    @r.get("/v1/agents/{id}")
    async def get_agent(request: web.Request) -> web.Response:
        aid = request.match_info["id"]
        agent = deps.live.state.agents.get(aid)
        if agent is None:
            return json_error(404, f"no agent {aid}")
        return ok(agent_json(aid, agent))

    @r.put("/v1/agents/{id}")
    async def put_agent(request: web.Request) -> web.Response:
        return await change_profile(request)

    @r.patch("/v1/agents/{id}")
    async def patch_agent(request: web.Request) -> web.Response:
        return await change_profile(request)

    async def set_active(request: web.Request, *, active: bool) -> web.Response:
        """Deactivate or reactivate; asking for the state the agent is already in answers the
        agent as it is and appends nothing (safe to retry without an Idempotency-Key)."""
        aid = request.match_info["id"]
        # Reactivating takes no fields: a stray one is refused like any unknown field.
        body = await read_body(request, DeactivateBody) if not active else DeactivateBody()
        if active:
            await read_body(request, EmptyBody)
        for _ in range(CONFLICT_RETRIES):
            if aid not in deps.live.state.agents:
                return json_error(404, f"no agent {aid}")
            last = await guarded(aid)
            agent = deps.live.state.agents[aid]
            if is_active(agent) == active:
                return ok(agent_json(aid, agent))
            event: LogEvent = (
                AgentReactivated(at=deps.clock(), agent_id=aid, actor=request[ACTOR])
                if active
                else AgentDeactivated(at=deps.clock(), agent_id=aid, actor=request[ACTOR], reason=body.reason)
            )
            try:
                await deps.append(event, last)
            except ConcurrencyError:
                continue
            log.info("api.agent_activation", agent_id=aid, active=active, actor=request[ACTOR])
            return ok(agent_json(aid, deps.live.state.agents[aid]))
        return json_error(409, f"agent {aid} kept changing meanwhile; try again")

    @r.delete("/v1/agents/{id}")
    async def deactivate_agent(request: web.Request) -> web.Response:
        """The agent gets no new work and its tokens are refused (403); its history, profile
        and tokens are kept, so ``POST /v1/agents/{id}/reactivate`` brings it back as it was."""
        return await set_active(request, active=False)

    @r.post("/v1/agents/{id}/reactivate")
    async def reactivate_agent(request: web.Request) -> web.Response:
        return await set_active(request, active=True)

    @r.post("/v1/agents/{id}/status")
    async def agent_status(request: web.Request) -> web.Response:
        aid = request.match_info["id"]
        body = await read_body(request, StatusBody)
        if body.status not in AGENT_STATUSES:
            return json_error(400, f"status is one of {', '.join(AGENT_STATUSES)}")
        if aid not in deps.live.state.agents:
            return json_error(404, f"no agent {aid}")
        event = AgentStatusChanged(
            at=deps.clock(),
            agent_id=aid,
            status=body.status,  # type: ignore[arg-type]
            actor=request[ACTOR],
            reason=body.reason,
        )
        await deps.append(event, None)
        return ok(agent_json(aid, deps.live.state.agents[aid]))

    return r
