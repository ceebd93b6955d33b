"""The REST API's route table: one declarative row per route the aiohttp app registers.

Each row names the request body's type (the very Struct the handler decodes with
``read_body``), the answers by status (the Structs in ``services.contracts.responses``), the
query parameters and who may call it. ``services.contracts.openapi`` turns the table into the
OpenAPI document; ``tests/unit/test_contracts.py`` fails when ``build_app`` registers a route
this table does not describe (or the other way round), so the document cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from services.api import (
    agent_api,
    agents,
    canned,
    common,
    conversation_queries,
    conversations,
    customers,
    dlq,
    notes,
    outbound,
    paging,
    registry,
    session,
    templates,
    tokens,
    uploads,
)
from services.contracts import responses as rs
from services.delivery import records
from services.reports.metrics import GROUP_BYS
from services.reports.projection import MAX_REOPEN_HOURS

# Who may call: a token, or nobody needs one (PUBLIC). Which tokens (operator, supervisor,
# agent) the document lists comes from the access table, services.api.access.RULES.
Auth = Literal["operator", "agent"]
OPERATOR: tuple[Auth, ...] = ("operator",)
BOTH: tuple[Auth, ...] = ("operator", "agent")
PUBLIC: tuple[Auth, ...] = ()

# Answers that are not JSON: a media type and a plain string schema.
HTML = "text/html"
EVENT_STREAM = "text/event-stream"
PROMETHEUS = "text/plain"


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    type: Any = str
    required: bool = False
    # A number's range as the API checks it (``common.query_int``): outside it is 400. Found
    # by a fuzzing audit: ``limit=0`` was "valid" by the document and refused by every route.
    low: float | None = None
    high: float | None = None
    # The only values the API takes (another is 400), from the code's own tuple: an ``enum``.
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    tag: str
    responses: dict[int, Any]  # status -> a msgspec type, or a media type string (HTML...)
    auth: tuple[Auth, ...] = OPERATOR
    body: Any = None  # the Struct the handler decodes; every field has a default unless required
    body_required: bool = False
    query: tuple[Query, ...] = ()
    errors: dict[int, str] = field(default_factory=dict)  # status -> when

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


LIMIT = Query("limit", "at most this many (default 100)", int, low=1, high=paging.MAX_LIMIT)
RECORDS_LIMIT = Query("limit", "at most this many (default 100)", int, low=1, high=common.MAX_RECORDS)
PAGE_LIMIT = Query(
    "limit", "at most this many (default 100, at most 1000: more is 400)", int, low=1, high=paging.MAX_LIMIT
)
CURSOR = Query("cursor", "the next page: next_cursor of the page before, as it came", str)
AGENT_FOR_OPERATOR = Query("agent", "with the operator token: the agent to act for (the console's operator view)")

NO_PARKED = {404: "no such parked message"}
CONVERSATION_COMMAND = {
    404: "no such conversation",
    409: "the conversation changed meanwhile, or the action does not fit its state (conversation_status"
    " 'resolved': it is resolved; a transfer or escalation no active agent could take, unless queue_anyway)",
    410: "the customer was erased: nothing about them can be recorded",
}

PROFILE_ERRORS = {
    400: "invalid profile or unknown language",
    404: "no such customer",
    409: "the customer was merged into another, or kept changing",
    410: "the customer was erased",
}

ROUTES: tuple[Route, ...] = (
    # --- no token -------------------------------------------------------------------
    Route("GET", "/healthz", "Liveness", "health", {200: rs.Health}, auth=PUBLIC),
    Route(
        "GET",
        "/readyz",
        "Readiness: NATS, the streams and the API's view caught up with the log and keeping up",
        "health",
        {200: rs.Readiness, 503: rs.Readiness},
        auth=PUBLIC,
    ),
    Route("GET", "/openapi.json", "This document", "docs", {200: dict[str, Any]}, auth=PUBLIC),
    Route("GET", "/docs", "A page rendering this document", "docs", {200: HTML}, auth=PUBLIC),
    Route(
        "GET",
        "/console",
        "The agent console (its data comes from the API with a token)",
        "console",
        {200: HTML},
        auth=PUBLIC,
    ),
    Route(
        "GET",
        "/console/{name}",
        "The console's static files (console.js, console.css)",
        "console",
        {200: HTML},
        auth=PUBLIC,
        errors={404: "no such file"},
    ),
    Route(
        "POST",
        "/v1/session",
        "Sign the console in: the token exchanged for an HttpOnly session cookie (services.api.session)",
        "console",
        {200: session.SessionInfo},
        auth=PUBLIC,
        body=session.SessionBody,
        body_required=True,
        errors={401: "invalid token", 403: "a cross-site sign-in"},
    ),
    Route(
        "DELETE",
        "/v1/session",
        "Sign the console out: the session cookie expires",
        "console",
        {200: session.SignedOut},
        auth=PUBLIC,
        errors={403: "a cross-site request (no Origin of this host, no X-Relaydesk-CSRF header)"},
    ),
    # --- agents ---------------------------------------------------------------------
    Route(
        "GET",
        "/v1/agents",
        "List agents with status and load, by id, a page at a time",
        "agents",
        {200: rs.AgentList},
        query=(PAGE_LIMIT, CURSOR),
        errors={400: "limit out of 1-1000, or a cursor this endpoint did not give"},
    ),
    Route("GET", "/v1/agents/{id}", "One agent", "agents", {200: rs.Agent}, auth=BOTH, errors={404: "no such agent"}),
    Route(
        "PUT",
        "/v1/agents/{id}",
        "Create an agent or change its profile: fields left out are kept (a new agent: the defaults)",
        "agents",
        {200: rs.Agent, 201: rs.Agent},
        body=agents.AgentChanges,
        errors={
            400: "invalid id (1-128 letters, digits, '-', '_'), a number out of range (tier 1-3, levels 1-5,"
            " capacity and max_total 0-1000), or an unknown skill, language or channel",
            409: "the agent kept changing",
        },
    ),
    Route(
        "PATCH",
        "/v1/agents/{id}",
        "Change some fields of an agent's profile (the same as PUT: fields left out are kept)",
        "agents",
        {200: rs.Agent, 201: rs.Agent},
        body=agents.AgentChanges,
        errors={
            400: "invalid id (1-128 letters, digits, '-', '_'), a number out of range (tier 1-3, levels 1-5,"
            " capacity and max_total 0-1000), or an unknown skill, language or channel",
            409: "the agent kept changing",
        },
    ),
    Route(
        "DELETE",
        "/v1/agents/{id}",
        "Deactivate an agent: no new work, tokens refused, history kept (again: the same answer)",
        "agents",
        {200: rs.Agent},
        body=agents.DeactivateBody,
        errors={404: "no such agent", 409: "the agent kept changing"},
    ),
    Route(
        "POST",
        "/v1/agents/{id}/reactivate",
        "Reactivate a deactivated agent (again: the same answer)",
        "agents",
        {200: rs.Agent},
        body=common.EmptyBody,
        errors={404: "no such agent", 409: "the agent kept changing"},
    ),
    Route(
        "GET",
        "/v1/skills",
        "The skills agents, rules and transfers may name ([routing] skills)",
        "agents",
        {200: registry.SkillList},
        auth=BOTH,
    ),
    Route(
        "GET",
        "/v1/languages",
        "The languages agents and customers may name ([routing] languages)",
        "agents",
        {200: registry.LanguageList},
        auth=BOTH,
    ),
    Route(
        "POST",
        "/v1/agents/{id}/status",
        "Set an agent's status (available, away, offline)",
        "agents",
        {200: rs.Agent},
        auth=BOTH,
        body=agents.StatusBody,
        body_required=True,
        errors={400: "invalid status", 404: "no such agent"},
    ),
    Route(
        "POST",
        "/v1/agents/{id}/tokens",
        "Issue an agent token (shown once; only its hash is kept)",
        "tokens",
        {201: rs.IssuedToken},
        body=tokens.IssueBody,
        errors={404: "no such agent"},
    ),
    Route("GET", "/v1/agents/{id}/tokens", "An agent's tokens (never the secrets)", "tokens", {200: rs.TokenList}),
    Route(
        "DELETE",
        "/v1/agents/{id}/tokens/{token_id}",
        "Revoke an agent token",
        "tokens",
        {200: rs.TokenRecord},
        errors={404: "the agent has no such token"},
    ),
    # --- the calling agent --------------------------------------------------------------
    Route(
        "GET",
        "/v1/agent/me",
        "Who the token acts as, and the agent's work",
        "agent",
        {200: rs.AgentMe},
        auth=BOTH,
        query=(AGENT_FOR_OPERATOR,),
        errors={400: "an empty ?agent=", 404: "no such agent"},
    ),
    Route(
        "GET",
        "/v1/agent/work",
        "The calling agent's offers and assigned conversations",
        "agent",
        {200: rs.AgentWork},
        auth=BOTH,
        query=(AGENT_FOR_OPERATOR,),
        errors={400: "an operator token without ?agent=", 404: "no such agent"},
    ),
    Route(
        "POST",
        "/v1/agent/status",
        "Set the calling agent's status",
        "agent",
        {200: rs.Agent},
        auth=BOTH,
        body=agent_api.StatusBody,
        body_required=True,
        query=(AGENT_FOR_OPERATOR,),
        errors={400: "invalid status, or an operator token without ?agent=", 404: "no such agent"},
    ),
    Route(
        "GET",
        "/v1/agent/stream",
        "Server-sent events: the agent's work, then every event that concerns it (resume with Last-Event-ID)",
        "agent",
        {200: EVENT_STREAM},
        auth=BOTH,
        query=(
            AGENT_FOR_OPERATOR,
            Query(
                "after",
                "resume after this log sequence (or the Last-Event-ID header)",
                int,
                low=0,
                high=common.MAX_SEQ,
            ),
        ),
        errors={400: "after is not a sequence", 404: "no such agent"},
    ),
    # --- conversations --------------------------------------------------------------
    Route(
        "GET",
        "/v1/conversations",
        "Open conversations from the routing view, oldest opened first, a page at a time"
        " (status=resolved: from the timelines, most recently resolved first, a page at a time)",
        "conversations",
        {200: rs.ConversationList},
        query=(
            Query("status", "new, waiting, offered, assigned or resolved", values=conversation_queries.STATUSES),
            Query("agent", "held or offered to this agent"),
            PAGE_LIMIT,
            CURSOR,
        ),
        errors={
            400: "status is not one of its values, limit out of 1-1000, or a cursor this endpoint did not give",
            503: "resolved conversations need the timelines",
        },
    ),
    Route(
        "GET",
        "/v1/conversations/{id}",
        "One conversation, with the requirements the router applies now",
        "conversations",
        {200: rs.Conversation},
        auth=BOTH,
        errors={
            404: "no such conversation",
            503: "resolved, and the timelines projection has not recorded it yet (Retry-After)",
        },
    ),
    Route("GET", "/v1/queues", "Waiting conversations by queue", "conversations", {200: rs.Queues}),
    Route(
        "POST",
        "/v1/conversations/{id}/accept",
        "Accept an open offer",
        "conversations",
        {200: rs.CommandResult},
        auth=BOTH,
        body=conversations.AgentActionBody,
        errors=CONVERSATION_COMMAND,
    ),
    Route(
        "POST",
        "/v1/conversations/{id}/decline",
        "Decline an open offer (it is routed again without that agent)",
        "conversations",
        {200: rs.CommandResult},
        auth=BOTH,
        body=conversations.AgentActionBody,
        errors=CONVERSATION_COMMAND,
    ),
    Route(
        "POST",
        "/v1/conversations/{id}/transfer",
        "Transfer to an agent, a skill or a tier",
        "conversations",
        {200: rs.CommandResult},
        auth=BOTH,
        body=conversations.TransferBody,
        body_required=True,
        errors={
            **CONVERSATION_COMMAND,
            400: "no target or more than one named (to_agent, to_skill, to_tier), an unknown skill,"
            " or to_tier out of 1-3",
            404: "no such conversation or target agent",
        },
    ),
    Route(
        "POST",
        "/v1/conversations/{id}/escalate",
        "Escalate to a tier",
        "conversations",
        {200: rs.CommandResult},
        auth=BOTH,
        body=conversations.EscalateBody,
        body_required=True,
        errors={**CONVERSATION_COMMAND, 400: "to_tier out of 1-3"},
    ),
    Route(
        "POST",
        "/v1/conversations/{id}/resolve",
        "Resolve",
        "conversations",
        {200: rs.CommandResult},
        auth=BOTH,
        body=common.EmptyBody,
        errors=CONVERSATION_COMMAND,
    ),
    Route(
        "POST",
        "/v1/conversations/{id}/reply",
        "Reply to the customer on their channel (queued; the outcome comes as MessageSent or DeliveryFailed)",
        "conversations",
        {202: rs.CommandResult},
        auth=BOTH,
        body=conversations.ReplyBody,
        body_required=True,
        errors={
            **CONVERSATION_COMMAND,
            400: "empty text",
            409: "the conversation changed meanwhile, or has no address to reply to",
        },
    ),
    Route(
        "POST",
        "/v1/conversations/{id}/notes",
        "Add an internal note (never sent to the customer; on the timeline as kind note)",
        "conversations",
        {201: notes.NoteResult},
        auth=BOTH,
        body=notes.NoteBody,
        body_required=True,
        errors={
            400: "empty or too long text",
            403: "not the agent holding the conversation",
            404: "no such conversation",
            410: "the customer was erased: nothing about them can be recorded",
        },
    ),
    Route(
        "GET",
        "/v1/conversations/{id}/canned-replies",
        "The canned replies ([console] canned_replies) with their placeholders filled for this conversation",
        "conversations",
        {200: canned.CannedReplies},
        auth=BOTH,
        errors={404: "no such open conversation"},
    ),
    Route(
        "POST",
        "/v1/conversations",
        "Start a conversation with a customer (outbound-first), assigned to the agent; its first message is sent",
        "conversations",
        {201: outbound.StartResult},
        auth=BOTH,
        body=outbound.StartBody,
        body_required=True,
        errors={
            400: "no customer, address or first message; an unknown template or a missing parameter; a file too big",
            403: "an agent token naming another agent",
            404: "no such agent or customer",
            409: "an open conversation exists on that channel, or the provider's window forbids writing first",
            410: "the customer was erased",
        },
    ),
    Route(
        "GET",
        "/v1/templates",
        "The WhatsApp message templates ([[templates]]) a reply or a new conversation may send",
        "conversations",
        {200: templates.TemplateList},
        auth=BOTH,
    ),
    Route(
        "POST",
        "/v1/uploads",
        "Upload a file for a reply (raw body with its Content-Type, or multipart 'file'); answers its id",
        "conversations",
        {201: uploads.UploadResult},
        auth=BOTH,
        errors={
            400: "an empty file, or a multipart form that cannot be read (no boundary, a broken part)",
            413: "larger than the largest file any channel takes",
        },
    ),
    Route(
        "GET",
        "/v1/files/{token}",
        "A reply's file, by the signed link handed to the provider (no token: the link is the permission)",
        "conversations",
        {200: "application/octet-stream"},
        auth=PUBLIC,
        errors={403: "a forged, altered or expired link", 404: "no longer stored"},
    ),
    Route(
        "GET",
        "/v1/canned-replies",
        "The canned replies ([console] canned_replies, then those kept by the API), placeholders unfilled",
        "conversations",
        {200: canned.CannedReplies},
        auth=BOTH,
    ),
    Route(
        "PUT",
        "/v1/canned-replies/{id}",
        "Add or replace a canned reply kept by the API (title and text; placeholders as in the config)",
        "conversations",
        {200: canned.ListedReply, 201: canned.ListedReply},
        auth=BOTH,
        body=canned.CannedReplyBody,
        body_required=True,
        errors={
            400: "a bad id, an empty or too long title or text, an unknown placeholder",
            409: "set in the configuration file, 200 kept already (remove one first), or changed meanwhile too often",
            503: "NATS is away",
        },
    ),
    Route(
        "DELETE",
        "/v1/canned-replies/{id}",
        "Remove a canned reply kept by the API (removed: false when it was gone already)",
        "conversations",
        {200: rs.CannedReplyRemoved},
        auth=BOTH,
        errors={409: "set in the configuration file", 503: "NATS is away"},
    ),
    Route(
        "GET",
        "/v1/attachments/{token}",
        "An attachment's bytes, by the signed 5-minute link the timeline gives (services.api.attachments)",
        "customers",
        {200: "application/octet-stream"},
        auth=BOTH,
        errors={
            403: "a forged, altered or expired link, or one made for another caller",
            404: "no such message or attachment, or no longer stored",
            410: "the customer was erased",
            502: "the provider's media cannot be fetched (no credentials, refused, unreachable)",
        },
    ),
    # --- customers ------------------------------------------------------------------
    Route(
        "GET",
        "/v1/customers",
        "Find a customer by address (identity) or search (q, tier)",
        "customers",
        {200: rs.CustomerList},
        query=(
            Query("identity", "<channel>:<address>, e.g. sms:+15551234567 (exact)"),
            Query("q", "substring of the id, any identity or the CRM id"),
            Query("tier", "customer tier"),
            LIMIT,
        ),
        errors={400: "neither identity nor q given, or an invalid one", 404: "no customer with that identity"},
    ),
    Route(
        "GET",
        "/v1/customers/{id}",
        "A customer: profile, identities, merges, and for the console's panel name, CRM link, conversations",
        "customers",
        {200: rs.Customer},
        errors={400: "invalid customer id", 404: "no such customer"},
    ),
    Route(
        "PUT",
        "/v1/customers/{id}",
        "Set a customer's tier, flags, preferred language, CRM id and name: fields left out are kept",
        "customers",
        {200: rs.ProfileResult},
        body=customers.ProfileBody,
        errors=PROFILE_ERRORS,
    ),
    Route(
        "PATCH",
        "/v1/customers/{id}",
        "Change some fields of a customer's profile (the same as PUT: fields left out are kept, null clears)",
        "customers",
        {200: rs.ProfileResult},
        body=customers.ProfileBody,
        errors=PROFILE_ERRORS,
    ),
    Route(
        "DELETE",
        "/v1/customers/{id}",
        "Erase a customer and every customer merged into it (crypto-shredding)",
        "customers",
        {200: rs.ErasureReport},
        body=customers.EraseBody,
        query=(Query("reason", "why (or the body's reason); required"),),
        errors={400: "no reason given", 404: "no such customer"},
    ),
    Route(
        "GET",
        "/v1/customers/{id}/export",
        "Everything held about a customer and the customers merged into it (a subject access request)",
        "customers",
        {200: rs.CustomerExport},
        errors={400: "invalid customer id", 403: "not the operator", 404: "no such customer"},
    ),
    Route(
        "GET",
        "/v1/customers/{id}/timeline",
        "A customer's timeline across every channel, paged",
        "customers",
        {200: rs.Timeline},
        auth=BOTH,
        query=(
            Query(
                "after",
                "entries after this log sequence (next_after of the previous page)",
                int,
                low=0,
                high=common.MAX_SEQ,
            ),
            LIMIT,
            Query("channel", "only this channel"),
        ),
        errors={400: "invalid paging or channel", 404: "no such customer", 503: "timelines are not available"},
    ),
    Route(
        "POST",
        "/v1/customers/{id}/identities",
        "Link an address to a customer (merge: also merge its current owner in)",
        "customers",
        {200: rs.LinkResult},
        body=customers.LinkBody,
        body_required=True,
        errors={400: "invalid address", 404: "no such customer", 409: "the address belongs to another customer"},
    ),
    Route(
        "DELETE",
        "/v1/customers/{id}/identities/{identity}",
        "Take an address away from a customer: the next message from it starts a new customer"
        " (again: 200 with already_unlinked)",
        "customers",
        {200: rs.UnlinkResult},
        body=customers.UnlinkBody,
        query=(Query("reason", "why (instead of the body's reason; optional, kept sealed on the log)"),),
        errors={
            400: "invalid address or reason",
            404: "no such customer, or the customer never had that address",
            409: "the customer was merged into another (survivor): unlink from that one; or a conversation"
            " on the address kept changing (unlinked all the same: ask again to resolve it)",
            410: "the customer was erased",
            503: "the chat history did not answer (unlinked all the same: ask again to finish)",
        },
    ),
    Route(
        "POST",
        "/v1/customers/{id}/merge",
        "Merge another customer into this one (again: 200 with already_merged, nothing new written)",
        "customers",
        {200: rs.MergeResult},
        body=customers.MergeBody,
        body_required=True,
        errors={
            400: "a customer merged into itself",
            404: "no such customer",
            409: "one of them was merged into another customer (merged_into, survivor)",
        },
    ),
    # --- deliveries, parked messages, metrics, reports -----------------------------------
    Route(
        "GET",
        "/v1/deliveries",
        "Delivery records to agents' endpoints, newest first",
        "deliveries",
        {200: rs.DeliveryList},
        query=(
            Query("status", "pending, delivered, failed, retry_requested or superseded", values=records.STATUSES),
            Query("agent", "for this agent"),
            RECORDS_LIMIT,
        ),
        errors={400: "invalid status or limit"},
    ),
    Route(
        "GET",
        "/v1/deliveries/{id}",
        "One delivery record, with the notice sent",
        "deliveries",
        {200: rs.Delivery},
        errors={404: "no such delivery"},
    ),
    Route(
        "POST",
        "/v1/deliveries/{id}/retry",
        "Deliver a failed record again",
        "deliveries",
        {202: rs.Delivery},
        errors={404: "no such delivery", 409: "not failed, or changed meanwhile"},
    ),
    Route(
        "GET",
        "/v1/dlq",
        "Parked messages: dead letters and quarantined log events",
        "dlq",
        {200: rs.ParkedList},
        query=(Query("kind", "dead_letter or quarantined", values=dlq.KINDS), RECORDS_LIMIT),
        errors={400: "invalid kind or limit"},
    ),
    Route("GET", "/v1/dlq/{key}", "One parked message with its payload", "dlq", {200: rs.Parked}, errors=NO_PARKED),
    Route(
        "POST",
        "/v1/dlq/{key}/retry",
        "Re-drive a dead letter on its original subject",
        "dlq",
        {202: rs.Retried},
        errors={**NO_PARKED, 409: "a quarantined log event is not re-driven (the log is append-only)"},
    ),
    Route("DELETE", "/v1/dlq/{key}", "Drop a parked message", "dlq", {200: rs.Dropped}, errors=NO_PARKED),
    Route("GET", "/metrics", "Prometheus metrics of this process", "metrics", {200: PROMETHEUS}),
    Route(
        "GET",
        "/v1/reports/service",
        "Service report: waits, SLA attainment, declines, reopen rate",
        "reports",
        {200: rs.ServiceReport},
        query=(
            Query("from", "start (ISO 8601; default: 7 days before to)"),
            Query("to", "end (ISO 8601; default: now)"),
            Query(
                "group_by",
                "channel, agent, queue, tier (the customer's at routing), day or conversation (empty: none)",
                values=("", *GROUP_BYS),
            ),
            Query(
                "reopen_hours",
                "a conversation reopened within this many hours counts as reopened",
                float,
                low=0,
                high=MAX_REOPEN_HOURS,
            ),
            Query("tz", "IANA time zone of the days, hours and plain dates (default UTC), e.g. Europe/Paris"),
            Query(
                "limit",
                "groups on a page (group_by=conversation: default 100; the other groupings: all unless asked;"
                " at most 1000: more is 400)",
                int,
                low=1,
                high=paging.MAX_LIMIT,
            ),
            Query(
                "cursor",
                "the next page of groups: next_cursor of the page before, as it came, with the same from and to"
                " (the page carries its groups only: total and by_hour are null)",
                str,
            ),
        ),
        errors={
            400: "invalid query, limit out of 1-1000, or a cursor this endpoint did not give",
            503: "the report projection is still folding the log, or NATS is away",
        },
    ),
    # --- the Slack app (no token: Slack's signature, services.api.slack_routes) ----------------
    Route(
        "POST",
        "/slack/interactions",
        "Slack interactivity: Accept / Decline / Resolve buttons (form field payload=, signed by Slack)",
        "slack",
        {200: dict[str, Any]},
        auth=PUBLIC,
        errors={
            400: "no payload= form field holding JSON",
            401: "X-Slack-Signature does not match, or X-Slack-Request-Timestamp is more than 5 minutes off",
            404: "no [slack] signing_secret configured",
        },
    ),
    Route(
        "POST",
        "/slack/events",
        "Slack Events API: url_verification, and an agent's reply in a conversation's thread (signed by Slack)",
        "slack",
        {200: dict[str, Any]},
        auth=PUBLIC,
        errors={
            400: "body is not a JSON object",
            401: "X-Slack-Signature does not match, or X-Slack-Request-Timestamp is more than 5 minutes off",
            404: "no [slack] signing_secret configured",
        },
    ),
)


def by_key() -> dict[tuple[str, str], Route]:
    table: dict[tuple[str, str], Route] = {}
    for route in ROUTES:
        if route.key in table:
            raise ValueError(f"route {route.method} {route.path} is described twice")
        table[route.key] = route
    return table
