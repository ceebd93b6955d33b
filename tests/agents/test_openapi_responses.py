"""The OpenAPI document describes what the running API really answers: each answer's body
converts (``msgspec.convert``) into the type the served document declares for that route and
status, errors included; ``/openapi.json`` and ``/docs`` need no token."""

from __future__ import annotations

from typing import Any

import jsonschema
import msgspec
import pytest

from services.contracts import generate, openapi

from .helpers import API_TOKEN, AgentSystem, eventually

pytestmark = pytest.mark.integration

# Component name -> the msgspec type it was generated from.
_types = openapi._types()
_refs, _ = msgspec.json.schema_components(_types, ref_template=openapi.REF)
TYPES: dict[str, Any] = {
    ref["$ref"].rsplit("/", 1)[1]: kind for ref, kind in zip(_refs, _types, strict=True) if "$ref" in ref
}


class Contract:
    def __init__(self, s: AgentSystem, document: dict[str, Any]) -> None:
        self.s = s
        self.document = document
        self.checked: list[tuple[str, str, int]] = []

    def declared(self, method: str, template: str, status: int) -> Any:
        answers = self.document["paths"][template][method.lower()]["responses"]
        assert str(status) in answers, f"{method} {template} answered {status}, which the document does not declare"
        schema = answers[str(status)]["content"]["application/json"]["schema"]
        return TYPES[schema["$ref"].rsplit("/", 1)[1]]

    async def call(
        self,
        method: str,
        template: str,
        path: str | None = None,
        *,
        expect: int = 200,
        token: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """Call the API; the answer must have ``expect`` status and fit its declared type."""
        if token is None:
            status, answer = await self.s.call(method, path or template, body=body)
        else:
            status, answer = await self.s.call(method, path or template, token, body=body)
        assert status == expect, (method, path or template, status, answer)
        kind = self.declared(method, template, status)
        msgspec.convert(answer, kind)  # raises ValidationError naming the field that does not fit
        self.checked.append((method, template, status))
        return answer


async def test_the_served_document_describes_the_real_answers(s: AgentSystem) -> None:
    http = s.system.http
    async with http.get(s.api + "/openapi.json") as r:  # no token
        assert r.status == 200 and r.content_type == "application/json"
        document = await r.json()
    assert document == generate("openapi")
    async with http.get(s.api + "/docs") as r:
        assert r.status == 200 and r.content_type == "text/html"
        assert 'href="openapi.json"' in await r.text()

    c = Contract(s, document)
    await c.call("GET", "/healthz")
    await eventually(lambda: _ready(s))
    await c.call("GET", "/readyz")
    agents = await c.call("GET", "/v1/agents")
    assert {a["id"] for a in agents["agents"]} == {"ava", "bruno"}
    await c.call("GET", "/v1/agents/{id}", "/v1/agents/ava")

    customer, cid = await s.open()
    await eventually(lambda: s.conversation(cid, "offered"))
    conv = await c.call("GET", "/v1/conversations/{id}", f"/v1/conversations/{cid}")
    assert conv["effective"] is not None and conv["agent_id"] == "ava"
    await c.call("GET", "/v1/conversations", "/v1/conversations?status=offered")
    await c.call("GET", "/v1/queues")
    await c.call("GET", "/v1/agent/work", "/v1/agent/work?agent=ava")

    issued = await c.call("POST", "/v1/agents/{id}/tokens", "/v1/agents/ava/tokens", expect=201, body={"label": "t"})
    me = await c.call("GET", "/v1/agent/me", token=issued["token"])
    assert me["agent"]["id"] == "ava" and [o["id"] for o in me["offers"]] == [cid]
    await c.call("GET", "/v1/agents/{id}/tokens", "/v1/agents/ava/tokens")
    accepted = await c.call(
        "POST", "/v1/conversations/{id}/accept", f"/v1/conversations/{cid}/accept", token=issued["token"]
    )
    assert accepted["conversation"]["status"] == "assigned"

    await eventually(lambda: _found(s, f"/v1/customers/{customer}"))
    await c.call("GET", "/v1/customers/{id}", f"/v1/customers/{customer}")
    await c.call("GET", "/v1/customers", f"/v1/customers?q={customer}")
    await eventually(lambda: _has_entries(s, customer))
    timeline = await c.call("GET", "/v1/customers/{id}/timeline", f"/v1/customers/{customer}/timeline")
    assert timeline["entries"]

    resolved = await c.call("POST", "/v1/conversations/{id}/resolve", f"/v1/conversations/{cid}/resolve")
    assert resolved["conversation"] == {"id": cid, "status": "resolved"}
    # A resolved conversation is served from the timelines: the same declared type.
    await eventually(lambda: s.conversation(cid, "resolved"))
    await c.call("GET", "/v1/conversations/{id}", f"/v1/conversations/{cid}")
    await c.call("GET", "/v1/deliveries")
    await c.call("GET", "/v1/dlq")
    await eventually(lambda: _found(s, "/v1/reports/service"))
    await c.call("GET", "/v1/reports/service")

    # Refusals: the common Error shape, with the status the document declares.
    await c.call("GET", "/v1/agents/{id}", "/v1/agents/nobody", expect=404)
    await c.call("PUT", "/v1/agents/{id}", "/v1/agents/zed", expect=400, body={"tier": "high"})
    await c.call("POST", "/v1/conversations/{id}/accept", f"/v1/conversations/{cid}/accept", expect=409)  # resolved
    await c.call("POST", "/v1/conversations/{id}/accept", "/v1/conversations/cv-nosuch/accept", expect=404)
    await c.call("GET", "/v1/agents", token="not-a-token", expect=401)
    await c.call("GET", "/v1/queues", token=issued["token"], expect=403)
    assert len(c.checked) >= 25


async def _ready(s: AgentSystem) -> bool:
    status, _ = await s.call("GET", "/readyz")
    return status == 200


async def _found(s: AgentSystem, path: str) -> bool:
    status, _ = await s.call("GET", path)
    return status == 200


async def _has_entries(s: AgentSystem, customer: str) -> bool:
    status, body = await s.call("GET", f"/v1/customers/{customer}/timeline")
    return status == 200 and bool(body["entries"])


async def test_refusals_every_route_of_a_kind_gives_are_declared(s: AgentSystem) -> None:
    """What a fuzzing audit (schemathesis) found answered but undeclared, now declared and
    fitting ``Error``: an invalid Idempotency-Key on any command (400, also on commands with no
    body), a body over the limit on any command (413), an empty ``?agent=`` (400), and 503 (NATS
    away, the view still reading) on every route under /v1. The key is printable ASCII, as the
    document's pattern says: a key the pattern refuses is refused by the API too."""
    document = generate("openapi")
    c = Contract(s, document)
    http = s.system.http
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    key = document["components"]["parameters"]["IdempotencyKey"]["schema"]
    for bad in ("é-key", "a\tb", "k" * 256):
        assert not _fits(bad, key)
        for method, template, path in (
            ("POST", "/v1/deliveries/{id}/retry", "/v1/deliveries/nothing/retry"),
            ("DELETE", "/v1/dlq/{key}", "/v1/dlq/RD_INBOUND.1"),
            ("PATCH", "/v1/agents/{id}", "/v1/agents/ava"),
        ):
            headers = {**auth, "Idempotency-Key": bad}
            async with http.request(method, s.api + path, json={}, headers=headers) as r:
                assert r.status == 400, (method, path, bad, await r.text())
                msgspec.convert(await r.json(), c.declared(method, template, 400))
    assert _fits("order-42 retry 1", key)
    async with http.patch(s.api + "/v1/agents/ava", data=b"{" + b" " * (300 * 1024) + b"}", headers=auth) as r:
        assert r.status == 413
        msgspec.convert(await r.json(), c.declared("PATCH", "/v1/agents/{id}", 413))
    await c.call("GET", "/v1/agent/me", "/v1/agent/me?agent=", expect=400)

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                assert "503" in operation["responses"], (method, path)
            params = [p.get("$ref", "") for p in operation.get("parameters", [])]
            if not operation["security"]:  # public: no caller to scope a key to, so none is kept
                assert "#/components/parameters/IdempotencyKey" not in params, (method, path)


def test_the_event_stream_declares_each_event_as_a_client_parses_it() -> None:
    """OpenAPI 3.1 has an event stream's schema describe each event (schemathesis found a
    frame refused by ``{"type": "string"}``)."""
    stream = generate("openapi")["paths"]["/v1/agent/stream"]["get"]["responses"]["200"]["content"]
    schema = stream["text/event-stream"]["schema"]
    frames = [{"id": "8", "event": "work", "data": '{"offers": []}'}, {"event": "behind", "data": "{}"}]
    assert all(_fits(frame, schema) for frame in frames)
    assert not _fits({"id": "eight", "event": "work", "data": "{}"}, schema)


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


async def test_every_number_query_parameter_has_the_range_the_api_checks(s: AgentSystem) -> None:
    """Found by a fuzzing audit (schemathesis): ``limit=0`` fit the document (a bare integer)
    and every route refused it. Each number parameter now declares its range; at either end
    the API takes it, one past either end is a 400 that names it. (The event stream is left
    out: taken, it would stream on.)"""
    customer, _ = await s.open()
    document = generate("openapi")
    tried = []
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                schema = param.get("schema", {})
                if param.get("in") != "query" or schema.get("type") not in ("integer", "number"):
                    continue
                assert {"minimum", "maximum"} <= schema.keys(), (method, template, param["name"])
                if "text/event-stream" in operation["responses"]["200"]["content"]:
                    continue
                path = template.replace("{id}", customer)
                extra = "&q=ab" if template == "/v1/customers" else ""
                name, low, high = param["name"], schema["minimum"], schema["maximum"]
                for value in (low, high):
                    status, body = await s.call(method.upper(), f"{path}?{name}={value}{extra}")
                    assert status != 400, (template, name, value, body)
                for value in (low - 1, high + 1):
                    status, body = await s.call(method.upper(), f"{path}?{name}={value}{extra}")
                    assert status == 400 and name in body["error"], (template, name, value, body)
                tried.append((template, name))
    assert len(tried) == 9, tried  # limit on six lists and the report, after on a timeline, reopen_hours


async def test_every_query_parameter_with_values_takes_those_and_no_other(s: AgentSystem) -> None:
    """Found by the same audit: ``status``, ``kind`` and ``group_by`` were any string by the
    document and 400 for all but a few. Each declares its values (``enum``): the API takes
    every one and refuses another with a 400 that names the parameter."""
    tried = []
    for template, operations in generate("openapi")["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                values = param.get("schema", {}).get("enum")
                if param.get("in") != "query" or values is None:
                    continue
                name = param["name"]
                for value in values:
                    status, body = await s.call(method.upper(), f"{template}?{name}={value}")
                    assert status == 200, (template, name, value, body)
                status, body = await s.call(method.upper(), f"{template}?{name}=none-of-those")
                assert status == 400 and name in body["error"], (template, name, body)
                tried.append((template, name))
    assert len(tried) == 4, tried  # conversations by status, deliveries by status, dlq by kind, report groups


async def test_body_fields_declare_the_values_and_ranges_the_api_takes(s: AgentSystem) -> None:
    """Found by the same audit: ``"status": ""``, ``"role": ""`` and ``"tier": 0`` fit the
    document and were refused. The document now has what each handler checks: every value
    or number in it is taken, one outside is a 400 that names the field."""
    document = generate("openapi")

    def field(method: str, path: str, name: str) -> dict[str, Any]:
        ref = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        return document["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"][name]  # type: ignore[no-any-return]

    async def takes(method: str, path: str, name: str, value: Any) -> tuple[int, Any]:
        return await s.call(method, path, body={name: value})

    for template, path in (
        ("/v1/agents/{id}/status", "/v1/agents/ava/status"),
        ("/v1/agent/status", "/v1/agent/status?agent=ava"),
    ):
        for value in field("post", template, "status")["enum"]:
            assert (await takes("POST", path, "status", value))[0] == 200, (path, value)
        status, body = await takes("POST", path, "status", "busy")
        assert status == 400 and body["error"].startswith("status is one of"), body
    for value in field("post", "/v1/agents/{id}/tokens", "role")["enum"]:
        assert (await takes("POST", "/v1/agents/bruno/tokens", "role", value))[0] == 201, value
    status, body = await takes("POST", "/v1/agents/bruno/tokens", "role", "admin")
    assert status == 400 and body["error"].startswith("role is one of"), body

    tier = field("patch", "/v1/agents/{id}", "tier")
    for value in range(tier["minimum"], tier["maximum"] + 1):
        assert (await takes("PATCH", "/v1/agents/bruno", "tier", value))[0] == 200, value
    _, cid = await s.open()
    for method, template, path in (
        ("PATCH", "/v1/agents/{id}", "/v1/agents/bruno"),
        ("POST", "/v1/conversations/{id}/transfer", f"/v1/conversations/{cid}/transfer"),
        ("POST", "/v1/conversations/{id}/escalate", f"/v1/conversations/{cid}/escalate"),
    ):
        name = "tier" if method == "PATCH" else "to_tier"
        bounds = field(method.lower(), template, name)
        bounds = bounds["anyOf"][0] if "anyOf" in bounds else bounds  # to_tier may be null
        for value in (bounds["minimum"] - 1, bounds["maximum"] + 1):
            status, body = await takes(method, path, name, value)
            assert status == 400 and body["error"].startswith(f"{name} must be 1"), (template, value, body)
