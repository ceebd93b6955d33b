"""The OpenAPI 3.1 document of the REST API, generated from the route table and the code's
own msgspec types (``services.contracts.routes``), never written by hand."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from events import subjects
from services.api.access import roles_reaching
from services.api.idempotency import COMMAND_METHODS, HEADER, MAX_KEY_LENGTH, REPLAYED
from services.contracts import responses as rs
from services.contracts.routes import ROUTES, Query, Route, by_key

REF = "#/components/schemas/{name}"
PATH_PARAM = re.compile(r"\{([^}/]+)\}")

DESCRIPTION = """\
Relaydesk's HTTP API: agents, conversations and their commands, customers and their timelines,
delivery records, parked messages and service reports.

Authentication is a bearer token: the operator token (`[api] token`) acts as `operator` on
everything; an agent token (issued with `POST /v1/agents/{id}/tokens`) acts for its agent and
reaches only its own things (its record and status, `/v1/agent/...`, the conversations offered
or assigned to it or that it held, and their customers); a supervisor token (issued with
`"role": "supervisor"`) also sees every queue, conversation, agent and customer, moves work and
sets agents' status, and administers nothing. Each operation's `security` lists the tokens that
may call it (the rules: `services.api.access.RULES`); anything else answers 403 with a reason.

Every refusal is JSON `{"error": "<reason>"}` (schema `Error`), sometimes with more keys.
Commands (POST, PUT, PATCH, DELETE under `/v1`) take an `Idempotency-Key` header: a retry with the
same key answers the first result (with `Idempotent-Replayed: true`) and does the thing once.
"""


def is_command(route: Route) -> bool:
    """A command the ``Idempotency-Key`` middleware keeps: under ``/v1``, with a token (a
    public route, the console's sign-in, has no caller to scope a key to: it ignores one)."""
    return route.method in COMMAND_METHODS and route.path.startswith("/v1/") and bool(route.auth)


# What every route under /v1 may answer whatever it is: NATS away or slow, or the API's view
# still reading the log after a start (services.api.errors, services.api.readiness).
UNAVAILABLE = "NATS did not answer in time, or this API's view is still reading the log: retry (Retry-After)"
# What every route refuses before its handler runs (services.api.nul_refusal, .repeated_query).
MALFORMED = "a query parameter given more than once, or a NUL (U+0000) in the query or the path"
# Idempotency-Key: printable ASCII, as the header's draft standard (a structured-field string)
# has it and services.api.idempotency checks it; no space at either end (HTTP drops it).
KEY_PATTERN = "^[\\x21-\\x7E]([\\x20-\\x7E]*[\\x21-\\x7E])?$"


def _errors(route: Route) -> dict[int, str]:
    """The refusals a route may answer: its own, plus those every route of its kind has."""
    out: dict[int, str] = {}
    if route.body is not None:
        out[400] = "the body is not valid JSON or does not fit the schema"
    if route.auth:
        out[401] = "missing, unknown or revoked token"
        reach = roles_reaching(route.method, route.path)
        out[403] = (
            "an agent token reaching beyond its own agent and conversations"
            if "agent" in reach
            else "an agent token (operators and supervisors only)"
            if "supervisor" in reach
            else "an agent or supervisor token (operators only)"
        )
    if is_command(route):
        out[400] = f"{out[400]}; or an invalid Idempotency-Key" if 400 in out else "an invalid Idempotency-Key"
        out[409] = "the first request with this Idempotency-Key is still running"
        out[413] = "the request body is larger than the API's limit"
        out[422] = "this Idempotency-Key was used for another request"
    if route.path.startswith("/v1/"):
        out[503] = UNAVAILABLE
    for status, when in route.errors.items():
        out[status] = f"{out[status]}; or {when}" if status in out and status in (400, 409, 503) else when
    out[400] = f"{out[400]}; or {MALFORMED}" if 400 in out else MALFORMED
    return out


def _schema_for(kind: Any, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    return refs[kind]


# One Server-Sent Event as a client parses it (OpenAPI 3.1 has an event stream's schema
# describe each event; 3.2 names it itemSchema): its name, its JSON text and, for a log
# event, its sequence (services.api.stream).
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "work, hello, reset, revoked, behind, or a log event's type"},
        "data": {"type": "string", "description": "a JSON object"},
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the log sequence (resume after it)"},
    },
    "required": ["event", "data"],
}


def _content(kind: Any, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    if kind == "text/event-stream":
        return {kind: {"schema": SSE_EVENT}}
    if isinstance(kind, str):  # a media type that is not JSON (HTML, metrics, a file)
        return {kind: {"schema": {"type": "string"}}}
    return {"application/json": {"schema": _schema_for(kind, refs)}}


# Path parts the API refuses (400) unless they are a NATS subject token, as the log keeps the
# id (``services.customers.service.check_customer_id``): (path prefix, part). Found by a
# fuzzing audit: any string was a customer id by the document.
TOKEN_PARTS = (("/v1/customers/", "id"),)
TOKEN_SCHEMA = {"type": "string", "minLength": 1, "maxLength": subjects.TOKEN_MAX_LENGTH, "pattern": "^[A-Za-z0-9_-]+$"}


def _path_schema(route: Route, name: str) -> dict[str, Any]:
    token = any(route.path.startswith(prefix) and name == part for prefix, part in TOKEN_PARTS)
    return dict(TOKEN_SCHEMA) if token else {"type": "string"}


def _parameters(route: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(route, name)}
        for name in PATH_PARAM.findall(route.path)
    ]
    for q in route.query:
        param: dict[str, Any] = {
            "name": q.name,
            "in": "query",
            "description": q.description,
            "schema": msgspec.json.schema(q.type) | _bounds(q),
        }
        if q.required:
            param["required"] = True
        params.append(param)
    if is_command(route):
        params.append({"$ref": "#/components/parameters/IdempotencyKey"})
    return params


def _bounds(q: Query) -> dict[str, Any]:
    """What the API checks of a parameter beyond its type: a number's range (``minimum``,
    ``maximum``), the values a string may take (``enum``)."""
    bounds: dict[str, Any] = {"minimum": q.low, "maximum": q.high, "enum": list(q.values) or None}
    return {k: v for k, v in bounds.items() if v is not None}


def _operation(route: Route, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", route.path).rstrip("_"),
        "summary": route.summary,
        "tags": [route.tag],
        "security": [{f"{role}Token": []} for role in roles_reaching(route.method, route.path)] if route.auth else [],
    }
    params = _parameters(route)
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": route.body_required, "content": _content(route.body, refs)}
    answers: dict[str, Any] = {}
    for status, kind in sorted(route.responses.items()):
        answer: dict[str, Any] = {
            "description": "OK" if status < 300 else "see the body",
            "content": _content(kind, refs),
        }
        if is_command(route) and status < 300:
            answer["headers"] = {REPLAYED: {"$ref": "#/components/headers/IdempotentReplayed"}}
        answers[str(status)] = answer
    for status, when in sorted(_errors(route).items()):
        if str(status) not in answers:
            answers[str(status)] = {"description": when, "content": _content(rs.Error, refs)}
    op["responses"] = answers
    return op


def _types() -> list[Any]:
    """Every msgspec type the document names, in a stable order (first use)."""
    seen: list[Any] = [rs.Error]
    for route in ROUTES:
        for kind in (route.body, *(route.responses[s] for s in sorted(route.responses))):
            if kind is not None and not isinstance(kind, str) and kind not in seen:
                seen.append(kind)
    return seen


def build() -> dict[str, Any]:
    """The document as a dict; ``render`` gives its committed JSON text."""
    by_key()  # refuses a route described twice
    types = _types()
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    tags = sorted({route.tag for route in ROUTES})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Relaydesk API", "version": "v1", "description": DESCRIPTION},
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the operator token ([api] token, RELAYDESK_API_TOKEN): acts as `operator`",
                },
                "agentToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "rdat_…",
                    "description": "an agent token (POST /v1/agents/{id}/tokens): acts for its agent only",
                },
                "supervisorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "rdat_…",
                    "description": 'a supervisor token (POST /v1/agents/{id}/tokens with "role": "supervisor")',
                },
            },
            "parameters": {
                "IdempotencyKey": {
                    "name": HEADER,
                    "in": "header",
                    "required": False,
                    "description": "makes the command safe to retry: the same key (per token, method and path)"
                    " answers the first result for 24 hours and does the thing once",
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": KEY_PATTERN},
                }
            },
            "headers": {
                "IdempotentReplayed": {
                    "description": "`true` when this is the kept answer of an earlier request with the same key",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
        },
    }
