"""The console's customer panel: what ``GET /v1/customers/{id}`` adds to the profile.

``name`` (the team's, from the last ``CustomerProfileUpdated``; else the display name a
connector heard on an open conversation), ``crm_url`` (``[console] crm_url_template`` with
the CRM id filled in) and ``conversations``: the customer's conversations, most recently
active first (the customers merged into it included), from the timelines projection, with
the open ones' status from the live routing view (the projection may be a moment behind).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from router.state import RouterState
from services.api.workspace import WorkspaceFacts
from services.timelines.store import TimelineStore

CONVERSATIONS_SHOWN = 50


class PanelConversation(msgspec.Struct, kw_only=True):
    id: str
    channel: str | None
    status: str
    agent_id: str | None
    opened_at: str | None
    resolved_at: str | None
    last_activity_at: str | None


def crm_url(template: str, crm_id: str | None) -> str | None:
    if not template or not crm_id:
        return None
    return template.replace("{crm_id}", quote(crm_id, safe=""))


def display_name(facts: WorkspaceFacts, state: RouterState, customer_id: str, profile_name: str | None) -> str | None:
    if profile_name:
        return profile_name
    customer = state.customers.get(customer_id)
    for cid in sorted(customer.open_conversations) if customer is not None else ():
        name = facts.name_of(state, customer_id, cid)
        if name:
            return name
    return None


async def conversations(timelines: TimelineStore | None, state: RouterState, customer_id: str) -> list[dict[str, Any]]:
    if timelines is None:
        return []
    out: list[dict[str, Any]] = []
    for summary in await timelines.conversations(customer_id=customer_id, limit=CONVERSATIONS_SHOWN):
        live = state.conversations.get(summary.conversation_id)
        row = PanelConversation(
            id=summary.conversation_id,
            channel=summary.channel,
            status=live.status if live is not None else summary.status,
            agent_id=live.agent_id if live is not None else summary.agent_id,
            opened_at=_iso(summary.opened_at),
            resolved_at=_iso(summary.resolved_at),
            last_activity_at=_iso(summary.last_activity_at),
        )
        out.append(msgspec.to_builtins(row))
    return out


def _iso(value: Any) -> str | None:
    return None if value is None else str(msgspec.to_builtins(value))
