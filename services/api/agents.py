"""Agents: profiles, status and load, read from the live routing view."""

from __future__ import annotations

import msgspec
from aiohttp import web

from events import subjects
from events.model import DEFAULT_CAPACITY, AgentProfile, AgentProfileUpdated, AgentStatusChanged
from services.api.common import ACTOR, ApiDeps, json_error, ok, read_body
from services.api.views import agent_json


class StatusBody(msgspec.Struct, kw_only=True):
    status: str
    reason: str = ""


def profile_problem(profile: AgentProfile) -> str | None:
    if not 1 <= profile.tier <= 3:
        return "tier must be 1 (frontline), 2 (specialist) or 3 (supervisor)"
    if any(not 1 <= level <= 5 for level in profile.skills.values()):
        return "skill levels go from 1 to 5"
    if any(not 1 <= level <= 5 for level in profile.languages.values()):
        return "language levels go from 1 to 5"
    if any(cap < 0 for cap in profile.capacity.values()):
        return "capacity cannot be negative"
    return None


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/v1/agents")
    async def list_agents(request: web.Request) -> web.Response:
        agents = [agent_json(aid, agent) for aid, agent in sorted(deps.live.state.agents.items())]
        return ok({"agents": agents})

    @r.get("/v1/agents/{id}")
    async def get_agent(request: web.Request) -> web.Response:
        aid = request.match_info["id"]
        agent = deps.live.state.agents.get(aid)
        if agent is None:
            return json_error(404, f"no agent {aid}")
        return ok(agent_json(aid, agent))

    @r.put("/v1/agents/{id}")
    async def put_agent(request: web.Request) -> web.Response:
        aid = request.match_info["id"]
        try:
            subjects.token(aid)
        except subjects.InvalidToken:
            return json_error(400, "agent id may use letters, digits, '-' and '_' only")
        profile = await read_body(request, AgentProfile)
        # As in the config file: channels the body leaves out keep their default capacity
        # (0 closes a channel), so {"capacity": {"sms": 1}} does not shut chat and email.
        profile = msgspec.structs.replace(profile, capacity={**DEFAULT_CAPACITY, **profile.capacity})
        problem = profile_problem(profile)
        if problem:
            return json_error(400, problem)
        created = aid not in deps.live.state.agents
        await deps.append(
            AgentProfileUpdated(at=deps.clock(), agent_id=aid, profile=profile, actor=request[ACTOR]), None
        )
        return ok(agent_json(aid, deps.live.state.agents[aid]), status=201 if created else 200)

    @r.post("/v1/agents/{id}/status")
    async def agent_status(request: web.Request) -> web.Response:
        aid = request.match_info["id"]
        body = await read_body(request, StatusBody)
        if body.status not in ("available", "away", "offline"):
            return json_error(400, "status is one of available, away, offline")
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
