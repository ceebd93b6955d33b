"""The published contracts (``services.contracts``): the committed OpenAPI and AsyncAPI
documents equal what the code generates, describe every route the app registers and every
fact the log may hold, and are structurally valid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import jsonschema
import pytest
from openapi_spec_validator import validate

from events.model import CustomerEvent, LogEvent
from services.api.app import build_app
from services.api.common import ApiDeps
from services.cli import main
from services.contracts import COMMITTED, check, generate, render
from services.contracts.routes import ROUTES, by_key


def registered_routes() -> set[tuple[str, str]]:
    """(method, path) of every route ``build_app`` registers. The dependencies are stand-ins:
    building the app only wires handlers, nothing talks to NATS until a request comes."""
    deps = ApiDeps(
        nc=MagicMock(), store=MagicMock(), live=MagicMock(), timelines=None, directory=MagicMock(), token="t"
    )
    app = build_app(deps)
    # aiohttp adds HEAD beside every GET by itself.
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD" and r.resource}


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def test_every_registered_route_is_in_the_openapi_document() -> None:
    registered = registered_routes()
    table = set(by_key())
    assert registered - table == set(), "routes the app serves that the document does not describe"
    assert table - registered == set(), "routes the document describes that the app does not serve"
    paths = generate("openapi")["paths"]
    documented = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert documented == registered


@pytest.mark.parametrize("what", ["openapi", "asyncapi"])
def test_committed_documents_equal_what_the_code_generates(what: str) -> None:
    same, diff = check(what)  # type: ignore[arg-type]
    assert same, f"run relaydesk docs {what} > services/contracts/{what}.json\n{diff[:3000]}"
    text = COMMITTED[what].read_text(encoding="utf-8")
    assert text.endswith("}\n") and text == render(json.loads(text)), "stable key order, trailing newline"


def test_the_openapi_document_is_valid_and_complete() -> None:
    document = generate("openapi")
    validate(document)  # OpenAPI 3.1 structure, schemas included
    for ref in refs(document):
        resolve(document, ref)
    schemes = document["components"]["securitySchemes"]
    assert schemes["operatorToken"]["scheme"] == "bearer" and schemes["agentToken"]["scheme"] == "bearer"
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    for route in ROUTES:
        op = document["paths"][route.path][route.method.lower()]
        names = {p.get("name") for p in op.get("parameters", [])}
        assert set(re.findall(r"\{([^}]+)\}", route.path)) <= names, route.path
        # A public command (the console's sign-in) has no caller to scope a key to: none is kept.
        commands = (
            route.method in ("POST", "PUT", "PATCH", "DELETE") and route.path.startswith("/v1/") and bool(route.auth)
        )
        has_key = {"$ref": "#/components/parameters/IdempotencyKey"} in op.get("parameters", [])
        assert has_key == commands, f"Idempotency-Key on {route.method} {route.path}"
        if route.auth:
            assert op["security"] and "401" in op["responses"], route.path
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
        else:
            assert op["security"] == [], route.path
    # The request bodies are the very Structs the handlers decode.
    transfer = document["paths"]["/v1/conversations/{id}/transfer"]["post"]["requestBody"]
    assert transfer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TransferBody"}
    assert set(document["components"]["schemas"]["TransferBody"]["properties"]) == {
        "to_agent",
        "to_skill",
        "to_tier",
        "note",
        "queue_anyway",
    }


def test_the_asyncapi_document_names_every_subject_and_fact() -> None:
    document = generate("asyncapi")
    assert document["asyncapi"].startswith("3.")
    assert document["info"]["title"] and document["info"]["version"]
    for ref in refs(document):
        resolve(document, ref)
    addresses = {c["address"]: c for c in document["channels"].values()}
    for address in (
        "rd.inbound.{channel}",
        "rd.evt.c.{customer}.{conversation}",
        "rd.evt.a.{agent}",
        "rd.out.{channel}",
    ):
        assert address in addresses, address
    for channel in document["channels"].values():
        assert set(re.findall(r"\{([^}]+)\}", channel["address"])) == set(channel.get("parameters", {}))
    # Every fact of the log is a message, by its tag, on the subject it belongs on.
    conversation = addresses["rd.evt.c.{customer}.{conversation}"]["messages"]
    agent = addresses["rd.evt.a.{agent}"]["messages"]
    messages = document["components"]["messages"]
    for cls in LogEvent.__args__:
        on = conversation if issubclass(cls, CustomerEvent) else agent
        assert cls.__name__ in on, cls.__name__
        tag = cls.__struct_config__.tag
        assert messages[cls.__name__]["name"] == tag
        payload = resolve(document, messages[cls.__name__]["payload"]["$ref"])
        assert payload["properties"]["type"]["enum"] == [tag]
    assert set(addresses["rd.inbound.{channel}"]["messages"]) == {"InboundMessage", "ReplyOutcomeReported"}
    assert set(addresses["rd.out.{channel}"]["messages"]) == {"DeliverReply"}
    # Operations point at their channel's messages; each payload schema is a valid JSON Schema.
    for op in document["operations"].values():
        assert op["action"] in ("send", "receive")
        channel = resolve(document, op["channel"]["$ref"])
        for ref in op["messages"]:
            assert resolve(document, ref["$ref"]) in channel["messages"].values()
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)  # raises SchemaError naming the fault


@pytest.mark.parametrize("what", ["openapi", "asyncapi"])
def test_relaydesk_docs_prints_and_checks(what: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["docs", what]) == 0
    assert json.loads(capsys.readouterr().out) == generate(what)  # type: ignore[arg-type]
    assert main(["docs", what, "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_reports_a_drifted_document(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from services import contracts

    stale = tmp_path / "openapi.json"
    stale.write_text(render({"openapi": "3.1.0"}), encoding="utf-8")
    monkeypatch.setitem(contracts.COMMITTED, "openapi", stale)
    assert contracts.command("openapi", check_only=True) == 1
    same, diff = contracts.check("openapi")
    assert not same and diff.startswith("--- openapi.json (committed)")
