"""JSON shapes the API serves, built from the routing view."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import structlog
from prometheus_client import Counter

from events import subjects
from events.model import ConversationLanguageChanged, RoutingRequested
from events.store import EventStore
from router import wrap_up
from router.effective import effective
from router.explain import explained_queues, waiting_because
from router.index import signature
from router.policy import RouterPolicy
from router.queues import held_summaries, queue_summaries
from router.state import AgentView, ConversationView, RouterState
from services.api.workspace import WorkspaceFacts

log = structlog.get_logger(__name__)

LANGUAGE_REASON_UNREAD = Counter(  # the API's alone: registered by build_app (services.metrics.measured)
    "relaydesk_api_language_reason_unread_total",
    "GET /v1/conversations/{id} answers without language_reason: the conversation's log could not be read",
    registry=None,
)


def conversation_json(conversation_id: str, conv: ConversationView) -> dict[str, Any]:
    return {
        "id": conversation_id,
        "customer_id": conv.customer_id,
        "channel": conv.channel,
        "status": conv.status,
        "agent_id": conv.agent_id,
        "public": conv.public,
        "requirements": msgspec.to_builtins(conv.requirements),
        "reason": msgspec.to_builtins(conv.reason) if conv.reason else None,
        "transfer_count": conv.transfer_count,
        "escalation_step": conv.step,
        "opened_at": msgspec.to_builtins(conv.opened_at),
        "waiting_since": msgspec.to_builtins(conv.waiting_since),
        "offer_expires_at": msgspec.to_builtins(conv.offer_expires_at),
    }


def conversation_subject(facts: WorkspaceFacts, conversation_id: str) -> str | None:
    """The subject of the conversation's first email (the workspace fold keeps it for the work
    list; no read of the log). Personal data: served where the conversation may be read."""
    found = facts.conversations.get(conversation_id)
    return found.subject if found is not None else None


async def language_reason_json(store: EventStore, customer_id: str, conversation_id: str) -> dict[str, Any] | None:
    """Why the conversation has its language: the reason of the latest ``RoutingRequested`` or
    ``ConversationLanguageChanged`` (a later message corrected it). The routing view keeps no
    reason (it routes by the language alone), so one direct get of the conversation's own
    subject reads it: a few events, no consumer. ``None`` when none was recorded (events
    written before 2026-12, a language set by hand) or the log did not answer."""
    try:
        events = await store.read_direct(subjects.conversation(customer_id, conversation_id))
    except Exception as err:  # the rest of the answer stands without it
        LANGUAGE_REASON_UNREAD.inc()
        log.warning("api.language_reason_unread", conversation_id=conversation_id, error=repr(err))
        return None
    reason = None
    for stored in events:
        event = stored.event
        if isinstance(event, RoutingRequested) and event.language_reason is not None:
            reason = event.language_reason
        elif isinstance(event, ConversationLanguageChanged) and event.reason is not None:
            reason = event.reason
    return msgspec.to_builtins(reason) if reason is not None else None


def effective_json(state: RouterState, conv: ConversationView, policy: RouterPolicy) -> dict[str, Any]:
    """What the router applies now: ``requirements`` after the customer's tier and flags,
    transfers, escalation and the escalation steps reached, plus the agents it skips."""
    sig = signature(state, conv)
    eff = effective(sig, policy)
    return {
        "skills": eff.skills,
        "languages": list(eff.languages) if eff.languages is not None else None,
        "min_tier": eff.min_tier,
        "priority": sig.priority + eff.boost,
        "customer_tier": sig.customer_tier,
        "flags": list(sig.flags),
        "excluded_agents": sorted(conv.excluded),
    }


def summary_json(summary: Any) -> dict[str, Any]:
    """A conversation the routing view no longer holds (resolved), from the timelines."""
    body: dict[str, Any] = msgspec.to_builtins(summary)
    body["id"] = body.pop("conversation_id")
    body["reason"] = body.pop("last_reason", None)
    body.pop("folded", None)  # the fold's own bookkeeping (re-published events)
    return body


def agent_json(agent_id: str, agent: AgentView) -> dict[str, Any]:
    return {
        "id": agent_id,
        "name": agent.profile.name,
        "status": agent.status,
        # False once deactivated (DELETE /v1/agents/{id}); read defensively for older views.
        "active": bool(getattr(agent, "active", True)),
        "tier": agent.profile.tier,
        "skills": agent.profile.skills,
        "languages": agent.profile.languages,
        "capacity": agent.profile.capacity,
        "max_total": agent.profile.max_total,
        "voice": agent.profile.voice,
        "load": dict(agent.load),
        # Share of all her slots in use (every channel together, capped by max_total); whether
        # she can take more on one channel is ``free_slots`` (found by an audit: a chat agent
        # full at 3 of 3 read 0.214, her 14 slots of every channel counted).
        "occupancy": round(agent.occupancy(), 3),
        "free_slots": free_slots(agent),
        "holding": sorted(agent.holding),
    }


def free_slots(agent: AgentView) -> dict[str, int]:
    """Per channel, how many more conversations she may take there now (``wrap_up.room``:
    capacity less load, no more than ``max_total`` leaves); wrap-ups not counted."""
    return {channel: wrap_up.room(agent, channel, 0.0, _NO_WRAP_UP) for channel in agent.profile.capacity}


_NO_WRAP_UP = RouterPolicy(wrap_up_seconds={})


def waiting_because_json(state: RouterState, conv: ConversationView, now: datetime, policy: RouterPolicy) -> Any:
    """Why a waiting or offered conversation has no agent working it (eligible agents and the
    first blocking requirement, see ``router.explain``); None for other statuses."""
    return msgspec.to_builtins(waiting_because(state, conv, now, policy))


def queues_json(state: RouterState, now: datetime, policy: RouterPolicy) -> dict[str, Any]:
    # Each queue says why its work waits (eligible agents, blocking): O(queues x agents) here,
    # never in the router's loop (its queue gauges use the plain summaries).
    summaries = queue_summaries(state, now.timestamp(), policy)
    queues = msgspec.to_builtins(explained_queues(state, summaries, now, policy))
    held = msgspec.to_builtins(held_summaries(state, now.timestamp()))
    return {"queues": queues, "held_for_agents": held, "total_waiting": sum(q["waiting"] for q in queues)}
