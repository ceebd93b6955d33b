"""Who may do what: the one table of the API's access rules, and the facts it needs.

Three roles. The **operator** token (``[api] token``) may do everything. An **agent** token
acts for one agent and reaches her own work; a **supervisor** token (an agent token issued
with ``"role": "supervisor"``) does everything an agent may for herself and also sees every
queue, conversation, agent and customer, moves work and sets any agent's status, but does not
administer (tokens, config, parked messages, deliveries, agent and customer records).

``RULES`` below is the table: one row per route, what an agent needs and what a supervisor
needs. A route missing from it is operator only, so a new route is closed until someone
adds its row. The README's "Who may do what" table is this one, written out.

"Held" is a fact of the log, not of the routing view (which forgets resolved conversations):
``Custody`` (``services.api.custody``) folds, for every conversation ever assigned, the agents
it was assigned to and whether it is resolved. An agent reads a conversation she holds now
(offered or assigned to her) or held before, and the customers of those conversations
(merges followed to the surviving customer).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from router.state import RouterState
from services.api.common import ApiDeps, json_error, ok
from services.api.custody import Custody
from services.api.views import conversation_json, summary_json

Role = Literal["operator", "supervisor", "agent"]
ROLES: tuple[Role, ...] = ("operator", "supervisor", "agent")
TOKEN_ROLES = ("agent", "supervisor")  # what POST /v1/agents/{id}/tokens may issue


async def agent_conversations(
    deps: ApiDeps, custody: Custody | None, agent_id: str, status: str | None, named: str | None, limit: int = 500
) -> web.Response:
    """``GET /v1/conversations`` for an agent token: only hers. Open ones offered or assigned
    to her; with ``?status=resolved`` the resolved ones she held, most recently resolved first."""
    if named not in (None, agent_id):
        return json_error(403, "an agent token lists only its own conversations")
    if status == "resolved":
        if deps.timelines is None:
            return json_error(503, "resolved conversations are read from the timelines, not available here")
        held = custody.resolved_of(agent_id, limit) if custody is not None else []
        found = [await deps.timelines.conversation(cid) for cid in held]
        out = [summary_json(s) for s in found if s is not None]
    else:
        out = [
            conversation_json(cid, conv)
            for cid, conv in deps.live.state.conversations.items()
            if conv.agent_id == agent_id and conv.status in ("offered", "assigned") and status in (None, conv.status)
        ]
    return ok({"conversations": out, "count": len(out)})


# --- the checks a rule can name ------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One request as the rules see it."""

    role: Role
    agent_id: str
    method: str
    path: str
    params: dict[str, str]
    state: RouterState
    custody: Custody | None


Check = Callable[[Ask], str | None]  # why not (None: allowed)


def allowed(ask: Ask) -> str | None:
    return None


def operator_only(ask: Ask) -> str | None:
    return f"{ask.role} tokens may not use this endpoint (operator only)"


def herself(ask: Ask) -> str | None:
    return None if ask.params["id"] == ask.agent_id else f"an {ask.role} token acts only for its own agent"


def _open_with_her(ask: Ask, wanted: str) -> str | None:
    cid = ask.params["id"]
    conv = ask.state.conversations.get(cid)
    if conv is None:
        return None  # not open: the handler answers 404
    if conv.agent_id != ask.agent_id or conv.status not in ("offered", "assigned"):
        return f"conversation {cid} is not offered or assigned to you"
    if wanted == "offered" and conv.status != "offered":
        return f"conversation {cid} has no open offer for you"
    if wanted == "assigned" and conv.status != "assigned":
        # Replying to a customer and then letting the offer lapse to someone else would
        # leave two agents talking to one customer.
        return f"conversation {cid} is offered to you: accept it first"
    return None


def offered_to_her(ask: Ask) -> str | None:
    return _open_with_her(ask, "offered")


def assigned_to_her(ask: Ask) -> str | None:
    return _open_with_her(ask, "assigned")


def reads_conversation(ask: Ask) -> str | None:
    """Offered or assigned to her now, or assigned to her at any time before."""
    cid = ask.params["id"]
    conv = ask.state.conversations.get(cid)
    if conv is not None and conv.agent_id == ask.agent_id and conv.status in ("offered", "assigned"):
        return None
    if ask.custody is not None and ask.custody.held(ask.agent_id, cid):
        return None
    return f"you do not hold and never held conversation {cid}"


def reads_customer(ask: Ask) -> str | None:
    if serves_customer(ask.state, ask.custody, ask.agent_id, ask.params["id"]):
        return None
    return "you hold no conversation of this customer and never held one"


def lists_conversations(ask: Ask) -> str | None:
    """An agent lists only her own (the handler filters); naming another agent is refused."""
    return None  # the handler filters by role (services.api.conversations)


def serves_customer(state: RouterState, custody: Custody | None, agent_id: str, customer_id: str) -> bool:
    """Whether ``agent_id`` may read ``customer_id``'s profile and timeline: she holds an open
    conversation of the customer or held one of theirs (the usual case, checked without working
    out everyone she may read), or of a customer merged into them."""
    if custody is not None and customer_id in custody.customers_served(agent_id):
        return True
    view = state.customers.get(customer_id)
    for cid in view.open_conversations if view is not None else ():
        conv = state.conversations.get(cid)
        if conv is not None and conv.agent_id == agent_id:
            return True
    return customer_id in customers_reachable(state, custody, agent_id)


def customers_reachable(state: RouterState, custody: Custody | None, agent_id: str) -> set[str]:
    """Customers whose profile and timeline ``agent_id`` may read: those of conversations she
    holds now or held before, and every customer those were merged into."""
    own = {c.customer_id for c in state.conversations.values() if c.agent_id == agent_id}
    if custody is not None:
        own |= custody.customers_served(agent_id)
    reach: set[str] = set()
    for customer_id in own:
        reach |= customer_and_survivors(state, customer_id)
    return reach


def customer_and_survivors(state: RouterState, customer_id: str) -> set[str]:
    """``customer_id`` and every customer it was merged into, merges of merges included."""
    return set(state.merge_chain(customer_id))


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    method: str
    route: str  # as registered with aiohttp: {name} is one path segment
    agent: Check
    supervisor: Check
    note: str = ""


RULES: tuple[Rule, ...] = (
    # her own desk
    Rule("GET", "/v1/agent/me", allowed, allowed),
    Rule("GET", "/v1/agent/work", allowed, allowed),
    Rule("GET", "/v1/agent/stream", allowed, allowed, "her own events"),
    Rule("POST", "/v1/agent/status", allowed, allowed),
    # conversations
    Rule("GET", "/v1/queues", operator_only, allowed),
    Rule("GET", "/v1/conversations", lists_conversations, allowed, "an agent: only hers, open and resolved"),
    Rule("POST", "/v1/conversations", allowed, allowed, "outbound-first: an agent starts it for herself"),
    Rule("GET", "/v1/conversations/{id}", reads_conversation, allowed, "an agent: held now or before"),
    Rule("POST", "/v1/conversations/{id}/accept", offered_to_her, offered_to_her),
    Rule("POST", "/v1/conversations/{id}/decline", offered_to_her, offered_to_her),
    Rule("POST", "/v1/conversations/{id}/reply", assigned_to_her, assigned_to_her),
    Rule("POST", "/v1/conversations/{id}/resolve", assigned_to_her, assigned_to_her),
    Rule("POST", "/v1/conversations/{id}/escalate", assigned_to_her, assigned_to_her),
    Rule("POST", "/v1/conversations/{id}/transfer", assigned_to_her, allowed, "a supervisor moves any"),
    Rule("POST", "/v1/conversations/{id}/notes", assigned_to_her, allowed),
    Rule("GET", "/v1/conversations/{id}/canned-replies", reads_conversation, allowed),
    # customers: read only, and an agent only those she holds or held
    Rule("GET", "/v1/customers", operator_only, allowed),
    Rule("GET", "/v1/customers/{id}", reads_customer, allowed),
    Rule("GET", "/v1/customers/{id}/timeline", reads_customer, allowed),
    # agents: the roster for everyone (transfer picks an agent), changes for herself
    Rule("GET", "/v1/agents", allowed, allowed),
    Rule("GET", "/v1/agents/{id}", herself, allowed),
    Rule("POST", "/v1/agents/{id}/status", herself, allowed),
    # lists and links the console needs
    Rule("GET", "/v1/skills", allowed, allowed),
    Rule("GET", "/v1/languages", allowed, allowed),
    Rule("GET", "/v1/canned-replies", allowed, allowed),
    Rule("PUT", "/v1/canned-replies/{id}", operator_only, allowed, "the team's replies: kept by the API"),
    Rule("DELETE", "/v1/canned-replies/{id}", operator_only, allowed),
    Rule("GET", "/v1/templates", allowed, allowed),
    Rule("POST", "/v1/uploads", allowed, allowed, "a file for a reply"),
    Rule("GET", "/v1/attachments/{token}", allowed, allowed, "the signed link is the permission"),
    Rule("POST", "/v1/session", allowed, allowed),
    Rule("DELETE", "/v1/session", allowed, allowed),
    # figures without personal data
    Rule("GET", "/v1/reports/service", operator_only, allowed),
)
# Everything else (tokens, config, parked messages, deliveries, PUT/PATCH/DELETE of agents and
# customers, links, merges, erasure, metrics): operator only.


def _pattern(route: str) -> re.Pattern[str]:
    escaped = re.escape(route).replace(r"\{", "{").replace(r"\}", "}")
    return re.compile("^" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", escaped) + "$")


_COMPILED = [(rule, _pattern(rule.route)) for rule in RULES]


def rule_for(method: str, path: str) -> tuple[Rule, dict[str, str]] | None:
    for rule, pattern in _COMPILED:
        if rule.method == method and (m := pattern.match(path)):
            return rule, m.groupdict()
    return None


def refusal(
    role: Role, agent_id: str, method: str, path: str, state: RouterState, custody: Custody | None
) -> str | None:
    """Why a ``role`` token of ``agent_id`` may not do ``method path`` (None: it may)."""
    if role == "operator":
        return None
    if method == "HEAD":
        method = "GET"
    if path.startswith("/v1/agent/"):
        return None  # her own desk: these act for the calling agent only
    found = rule_for(method, path)
    if found is None:
        return f"{role} tokens may not use this endpoint (operator only)"
    rule, params = found
    check = rule.agent if role == "agent" else rule.supervisor
    why = check(Ask(role, agent_id, method, path, params, state, custody))
    if why is not None and check is operator_only and role == "agent" and rule.supervisor is allowed:
        return "agent tokens may not use this endpoint (operator and supervisors only)"
    return why


def roles_reaching(method: str, route: str) -> tuple[Role, ...]:
    """The roles that may call ``method route`` at least sometimes (for the OpenAPI document)."""
    if route.startswith("/v1/agent/"):
        return ROLES
    found = rule_for(method, route)
    if found is None:
        return ("operator",)
    rule = found[0]
    return (
        "operator",
        *(["supervisor"] if rule.supervisor is not operator_only else []),
        *(["agent"] if rule.agent is not operator_only else []),
    )


def table_markdown() -> str:
    """The table as the README shows it (``python -c 'from services.api.access import
    table_markdown; print(table_markdown())'``)."""
    lines = ["| route | agent | supervisor | note |", "|---|---|---|---|"]
    for rule in RULES:
        cells = [_label(rule.agent), _label(rule.supervisor)]
        lines.append(f"| `{rule.method} {rule.route}` | {cells[0]} | {cells[1]} | {rule.note} |")
    lines.append("| `* /v1/agent/...` (any other) | yes | yes | acts for the caller only |")
    lines.append("| anything else | no | no | operator only |")
    return "\n".join(lines)


def _label(check: Check) -> str:
    return _LABELS.get(check, getattr(check, "__name__", "?"))


_LABELS: dict[Check, str] = {
    allowed: "yes",
    operator_only: "no",
    herself: "herself",
    offered_to_her: "offered to her",
    assigned_to_her: "assigned to her",
    reads_conversation: "holds or held it",
    reads_customer: "holds or held one of theirs",
    lists_conversations: "hers only",
}
