"""The calling agent's own API: who am I, my work, my status.

With an agent token these act for that agent; with the operator token they take
``?agent=<id>`` (the console's operator view uses it).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from events.model import AgentStatusChanged
from router.state import RouterState
from services.api import workspace
from services.api.auth import AGENT, role_of
from services.api.common import ACTOR, AGENT_STATUSES, ApiDeps, ApiError, Body, StatusField, json_error, ok, read_body
from services.api.views import agent_json, conversation_json
from services.api.workspace import WorkspaceFacts

log = structlog.get_logger(__name__)


class StatusBody(Body):
    status: StatusField
    reason: str = ""


def calling_agent(request: web.Request, deps: ApiDeps) -> str:
    """The agent a request acts for: its token's, or ``?agent=`` for the operator."""
    agent_id = request.get(AGENT) or request.query.get("agent")
    if not agent_id:
        raise ApiError(400, "use an agent token, or ?agent=<id> with the operator token")
    if agent_id not in deps.live.state.agents:
        raise ApiError(404, f"no agent {agent_id}")
    return agent_id


def customers_in_work(state: RouterState, agent_id: str) -> list[str]:
    return [
        conv.customer_id
        for conv in state.conversations.values()
        if conv.agent_id == agent_id and conv.status in ("offered", "assigned")
    ]


def work_json(state: RouterState, agent_id: str, facts: WorkspaceFacts | None = None) -> dict[str, Any]:
    """The agent's offers and assignments; with ``facts`` each item also says who the customer
    is (``customer``: name, masked address, tier, flags), ``preview`` and ``subject``
    (``services.api.workspace``). Names not known yet are looked up in the background."""
    offers: list[dict[str, Any]] = []
    assigned: list[dict[str, Any]] = []
    for cid, conv in state.conversations.items():
        if conv.agent_id != agent_id or conv.status not in ("offered", "assigned"):
            continue
        item = conversation_json(cid, conv)
        customer = state.customer(conv.customer_id)  # the survivor's, after a merge
        item["customer_tier"] = customer.tier if customer else "standard"
        item["customer_flags"] = list(customer.flags) if customer else []
        if facts is not None:
            item.update(facts.item_json(state, cid, conv.customer_id))
        (offers if conv.status == "offered" else assigned).append(item)
    if facts is not None:
        facts.look_up_soon(facts.missing_names(state, customers_in_work(state, agent_id)))
    offers.sort(key=lambda c: c.get("offer_expires_at") or "")
    assigned.sort(key=lambda c: c.get("waiting_since") or "")
    agent = state.agents.get(agent_id)
    return {
        "agent": agent_json(agent_id, agent) if agent else {"id": agent_id},
        "offers": offers,
        "assigned": assigned,
        "seq": state.last_seq,
    }


async def names_ready(deps: ApiDeps, agent_id: str) -> None:
    """Look up the names of the customers in the agent's work the workspace facts lack."""
    facts = workspace.of(deps.live, deps.store)
    await facts.look_up(facts.missing_names(deps.live.state, customers_in_work(deps.live.state, agent_id)))


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    facts = workspace.of(deps.live, deps.store)

    async def enriched_work(agent_id: str) -> dict[str, Any]:
        """``work_json`` with every customer's name looked up first (once per customer)."""
        await names_ready(deps, agent_id)
        return work_json(deps.live.state, agent_id, facts)

    @r.get("/v1/agent/me")
    async def me(request: web.Request) -> web.Response:
        if request.get(AGENT) is None and "agent" not in request.query:
            return ok({"actor": request[ACTOR], "operator": True, "role": "operator"})
        agent_id = calling_agent(request, deps)
        who = {"actor": request[ACTOR], "operator": role_of(request) == "operator", "role": role_of(request)}
        return ok({**who, **await enriched_work(agent_id)})

    @r.get("/v1/agent/work")
    async def work(request: web.Request) -> web.Response:
        return ok(await enriched_work(calling_agent(request, deps)))

    @r.post("/v1/agent/status")
    async def status(request: web.Request) -> web.Response:
        agent_id = calling_agent(request, deps)
        body = await read_body(request, StatusBody)
        if body.status not in AGENT_STATUSES:
            return json_error(400, f"status is one of {', '.join(AGENT_STATUSES)}")
        event = AgentStatusChanged(
            at=deps.clock(),
            agent_id=agent_id,
            status=body.status,  # type: ignore[arg-type]
            actor=request[ACTOR],
            reason=body.reason[:200],
        )
        await deps.append(event, None)
        log.info("api.agent_status", agent_id=agent_id, status=body.status, actor=request[ACTOR])
        return ok(agent_json(agent_id, deps.live.state.agents[agent_id]))

    return r
