"""What the API refuses, over a real nats-server, each with a 400 (or aiohttp's own 404, 405,
413) in JSON that says what was wrong: channels named in a capacity come from the registry like
skills, numbers on a profile have bounds, no body tolerates an unknown field, enum-like query
parameters are checked, an id's length is told as such and a transfer names one target; a
display name is bounded, a dead-letter key the KV bucket could not take is a 404 and a body
whose Content-Encoding does not decode is a JSON 400."""

from __future__ import annotations

import gzip
import re
import zlib
from typing import Any

import aiohttp
import pytest
from yarl import URL

from services.api.agents import MAX_CAPACITY, MAX_TOTAL
from services.api.common import MAX_NAME

from .helpers import API_TOKEN, AgentSystem, eventually

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
KNOWN_CHANNELS = ["sms", "email", "chat", "social", "voice"]


async def raw(s: AgentSystem, method: str, path: str, **kwargs: Any) -> tuple[int, str, dict[str, str], Any]:
    """Status, content type, headers and (JSON or text) body, whatever the answer's type."""
    async with s.system.http.request(method, s.api + path, headers=AUTH, **kwargs) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, r.content_type, dict(r.headers), body


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_capacity_names_known_channels_only(s: AgentSystem, method: str) -> None:
    status, body = await s.call(method, "/v1/agents/ava", body={"capacity": {"smss": 2}})
    assert status == 400, body
    assert body["error"].startswith("unknown channel 'smss' (did you mean 'sms'?): known channels are sms,"), body
    assert body["known_channels"] == KNOWN_CHANNELS
    status, body = await s.call(method, "/v1/agents/ava", body={"capacity": {"nochannel": 2}})
    assert status == 400 and body["error"].startswith("unknown channel 'nochannel': known channels"), body
    status, body = await s.call(method, "/v1/agents/newbie", body={"capacity": {"nochannel": 2, "sms": 1}})
    assert status == 400, body
    assert (await s.call("GET", "/v1/agents/newbie"))[0] == 404  # nothing was created
    status, body = await s.call(method, "/v1/agents/ava", body={"capacity": {"voice": 1}})
    assert status == 200 and body["capacity"]["voice"] == 1, body
    assert "nochannel" not in body["capacity"]


async def test_numbers_on_a_profile_have_bounds_named_in_the_refusal(s: AgentSystem) -> None:
    refused = {
        "max_total": ({"max_total": 999999999999999999999999}, f"max_total goes from 0 to {MAX_TOTAL}"),
        "negative max_total": ({"max_total": -1}, f"max_total goes from 0 to {MAX_TOTAL}"),
        "capacity": ({"capacity": {"sms": MAX_CAPACITY + 1}}, f"capacity on sms goes from 0 to {MAX_CAPACITY}"),
        "negative capacity": ({"capacity": {"chat": -1}}, f"capacity on chat goes from 0 to {MAX_CAPACITY}"),
        "tier": ({"tier": 4}, "tier must be 1 (frontline), 2 (specialist) or 3 (supervisor)"),
    }
    for what, (change, reason) in refused.items():
        status, body = await s.call("PATCH", "/v1/agents/ava", body=change)
        assert status == 400 and body["error"].startswith(reason), (what, body)
    status, body = await s.call("PATCH", "/v1/agents/ava", body={"max_total": MAX_TOTAL, "capacity": {"sms": 0}})
    assert status == 200 and (body["max_total"], body["capacity"]["sms"]) == (MAX_TOTAL, 0), body
    status, body = await s.call("PATCH", "/v1/agents/ava", body={"capacity": {"email": MAX_CAPACITY}})
    assert status == 200 and body["max_total"] == MAX_TOTAL, body


async def test_no_body_tolerates_an_unknown_field(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    _, cid = await s.open(language="en")
    await eventually(lambda: s.conversation(cid))
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("POST", "/v1/agents/ava/status", API_TOKEN, {"status": "available"}),
        ("POST", "/v1/agent/status", ava, {"status": "available"}),
        ("POST", "/v1/agents/ava/tokens", API_TOKEN, {"label": "x"}),
        ("DELETE", "/v1/agents/bruno", API_TOKEN, {"reason": "left"}),
        ("POST", "/v1/agents/ava/reactivate", API_TOKEN, {}),
        ("POST", f"/v1/conversations/{cid}/transfer", API_TOKEN, {"to_skill": "billing"}),
        ("POST", f"/v1/conversations/{cid}/escalate", API_TOKEN, {"to_tier": 2}),
        ("POST", f"/v1/conversations/{cid}/decline", API_TOKEN, {}),
        ("POST", f"/v1/conversations/{cid}/notes", API_TOKEN, {"text": "a note"}),
        ("POST", f"/v1/conversations/{cid}/resolve", API_TOKEN, {}),
    ]
    for method, path, token, body in calls:
        status, answer = await s.call(method, path, token, {**body, "extra": 1})
        assert (status, answer) == (400, {"error": "invalid body: Object contains unknown field `extra`"}), path
    assert (await s.conversation(cid)) is not None  # nothing was resolved
    status, answer = await s.call("GET", "/v1/agents/bruno")
    assert status == 200 and answer["active"] is True, answer


async def test_list_filters_name_their_allowed_values(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    allowed = ["new", "waiting", "offered", "assigned", "resolved"]
    for token in (API_TOKEN, ava):
        status, body = await s.call("GET", "/v1/conversations?status=bogus", token)
        assert status == 400, body
        assert body == {"error": f"status is one of {', '.join(allowed)}, not 'bogus'", "statuses": allowed}
        assert (await s.call("GET", "/v1/conversations?status=waiting", token))[0] == 200


async def test_an_agent_id_too_long_is_told_by_its_length(s: AgentSystem) -> None:
    status, body = await s.call("PUT", "/v1/agents/" + "a" * 300, body={"name": "A"})
    assert (status, body) == (400, {"error": "agent id takes 1 to 128 characters, not 300"})
    status, body = await s.call("PUT", "/v1/agents/" + "a" * 128, body={"name": "A"})
    assert status == 201, body
    status, body = await s.call("PUT", "/v1/agents/a.b", body={"name": "A"})
    assert (status, body) == (400, {"error": "agent id may use letters, digits, '-' and '_' only"})


async def test_a_transfer_names_one_target(s: AgentSystem) -> None:
    _, cid = await s.open(language="en")
    await eventually(lambda: s.conversation(cid))
    path = f"/v1/conversations/{cid}/transfer"
    refused = [
        ({"to_agent": "bruno", "to_skill": "billing"}, "give to_agent or to_skill, not both"),
        ({"to_skill": "billing", "to_tier": 2}, "give to_skill or to_tier, not both"),
        ({"to_agent": "bruno", "to_skill": "billing", "to_tier": 2}, "give one of to_agent, to_skill or to_tier"),
    ]
    for body, reason in refused:
        status, answer = await s.call("POST", path, body=body)
        assert status == 400 and answer["error"].startswith(reason), (body, answer)

    async def transferred() -> Any:
        # The router may offer it meanwhile: a 409 asks to fetch and try again, as a client would.
        status, answer = await s.call("POST", path, body={"to_agent": "bruno"})
        assert status in (200, 409), answer
        return answer if status == 200 else None

    answer = await eventually(transferred)
    assert answer["conversation"]["transfer_count"] == 1, answer


async def test_aiohttp_own_errors_are_json_too(s: AgentSystem) -> None:
    status, kind, _, body = await raw(s, "GET", "/v1/nothing-here")
    assert (status, kind, body) == (404, "application/json", {"error": "not found: GET /v1/nothing-here"})

    status, kind, headers, body = await raw(s, "POST", "/v1/agents")
    assert (status, kind) == (405, "application/json"), body
    assert body == {"error": "POST is not allowed on /v1/agents; allowed: GET, HEAD", "allowed": ["GET", "HEAD"]}
    assert sorted(headers["Allow"].split(",")) == ["GET", "HEAD"]

    big = b'{"name": "' + b"x" * (300 * 1024) + b'"}'
    status, kind, _, body = await raw(s, "PATCH", "/v1/agents/ava", data=big)
    assert (status, kind) == (413, "application/json"), body
    assert body == {"error": "the request body is larger than the limit of 256 KiB"}

    status, kind, headers, body = await raw(s, "GET", "/console/nope.js")
    assert (status, kind) == (404, "application/json"), body
    # Never sniffed into a page on the console's origin (a JSON answer quotes customers' words).
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, kind, headers, _ = await raw(s, "GET", "/v1/agents")
    assert (status, kind, headers["X-Content-Type-Options"]) == (200, "application/json", "nosniff")
    # The pages that are not JSON still are not (only errors changed).
    for path, expected in (("/console", "text/html"), ("/console/core.js", "text/javascript"), ("/docs", "text/html")):
        status, kind, _, body = await raw(s, "GET", path)
        assert (status, kind) == (200, expected), path


async def test_a_display_name_has_a_length_bound(s: AgentSystem) -> None:
    status, body = await s.call("PATCH", "/v1/agents/ava", body={"name": "x" * 200_000})
    assert (status, body) == (400, {"error": f"name takes at most {MAX_NAME} characters, not 200000"})
    status, body = await s.call("PATCH", "/v1/agents/ava", body={"name": "x" * MAX_NAME})
    assert status == 200 and body["name"] == "x" * MAX_NAME, body
    customer, _ = await s.open()
    status, body = await s.call("PATCH", f"/v1/customers/{customer}", body={"name": "y" * (MAX_NAME + 1)})
    assert (status, body) == (400, {"error": f"name takes at most {MAX_NAME} characters, not {MAX_NAME + 1}"})


@pytest.mark.parametrize("key", ["*", "%3E", "RD..1", "cu_%20x", "RD_INBOUND.", ".1", "a%2Fb.1.2"])
async def test_a_dead_letter_key_outside_the_bucket_rules_is_not_found(s: AgentSystem, key: str) -> None:
    for method, path in (("GET", f"/v1/dlq/{key}"), ("DELETE", f"/v1/dlq/{key}"), ("POST", f"/v1/dlq/{key}/retry")):
        status, kind, _, body = await raw(s, method, path)
        assert (status, kind) == (404, "application/json"), (method, path, body)
        assert body["error"].startswith("nothing parked under "), body
    status, _, _, body = await raw(s, "GET", "/v1/dlq/RD_INBOUND.999999")  # well-formed, absent
    assert (status, body) == (404, {"error": "nothing parked under RD_INBOUND.999999"})


@pytest.mark.parametrize("encoding", ["deflate", "gzip"])
async def test_a_body_that_cannot_be_decoded_is_a_json_400(s: AgentSystem, encoding: str) -> None:
    headers = {**AUTH, "Content-Encoding": encoding, "Content-Type": "application/json"}
    # A fresh connection each: aiohttp closes one whose body could not be read.
    url = s.api + "/v1/agents/ava"
    async with aiohttp.ClientSession() as http, http.patch(url, data=b"garbage", headers=headers) as r:
        assert (r.status, r.content_type) == (400, "application/json")
        assert await r.json() == {"error": f"the request body cannot be decoded (Content-Encoding: {encoding})"}
    body = zlib.compress(b'{"tier": 2}') if encoding == "deflate" else gzip.compress(b'{"tier": 2}')
    async with aiohttp.ClientSession() as http, http.patch(url, data=body, headers=headers) as r:
        assert r.status == 200 and (await r.json())["tier"] == 2  # a well-formed compressed body still works
    bomb = gzip.compress(b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    gzipped = {**headers, "Content-Encoding": "gzip"}
    async with aiohttp.ClientSession() as http, http.patch(url, data=bomb, headers=gzipped) as r:
        assert r.status == 413  # a gzip bomb stays refused by its inflated size


# Non-ASCII in a link's payload, in its signature, or both; %ED%A0%80 is an encoded surrogate.
LINKS = ["%C3%A9.%C3%A9", "abc.%F0%9F%98%80", "%C3%A9%C3%A9.abc", "%ED%A0%80.x"]


@pytest.mark.parametrize(
    "path",
    [
        *(f"/v1/attachments/{link}" for link in LINKS),
        *(f"/v1/files/{link}" for link in LINKS),
    ],
)
async def test_a_signed_link_with_non_ascii_text_is_refused_not_a_crash(s: AgentSystem, path: str) -> None:
    """A link's text comes from whoever sends it: non-ASCII in it made ``hmac.compare_digest``
    raise TypeError, a 500 with a traceback logged (found by a fuzzing audit)."""
    status, kind, _, body = await raw(s, "GET", path)
    assert (status, kind) == (403, "application/json"), body
    assert "not valid" in body["error"] or "invalid" in body["error"], body


async def test_a_display_name_holds_no_control_or_text_direction_characters(s: AgentSystem) -> None:
    """Found by a fuzzing audit: a name with a line break and a header after it, a NUL or a
    right-to-left override was stored and shown wherever the name goes (console, notices, logs)."""
    customer, _ = await s.open()
    refused = {
        "Bruno\r\nBcc: evil@example.com": "U+000D",
        "Ava\x00": "U+0000",
        "\x1b[31mAva": "U+001B",
        "Ava\u202etxt.exe": "U+202E",
        "Ava\u2028Bruno": "U+2028",
        "Ava\x85": "U+0085",
    }
    for name, code in refused.items():
        for path in ("/v1/agents/ava", f"/v1/customers/{customer}"):
            status, body = await s.call("PATCH", path, body={"name": name})
            assert status == 400, (path, name, body)
            assert body == {"error": f"name may not hold control or text-direction characters ({code})"}, body
    status, body = await s.call("GET", "/v1/agents/ava")
    assert status == 200 and body["name"] == "Ava", body
    for name in ("Zoë O'Brien-Łukasz", "王小明", "Ana 👩\u200d💻", "محمد"):
        status, body = await s.call("PATCH", "/v1/agents/ava", body={"name": name})
        assert status == 200 and body["name"] == name, body


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data", b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\nhi\r\n--x--\r\n"),
        ("multipart/form-data; boundary=x", b"--x\r\nbroken header line\r\n\r\nhi\r\n--x--\r\n"),
    ],
)
async def test_an_upload_whose_multipart_form_cannot_be_read_is_400(
    s: AgentSystem, content_type: str, body: bytes
) -> None:
    """No boundary, or a part header aiohttp cannot parse, was a 500 (found by a fuzzing audit)."""
    headers = {**AUTH, "Content-Type": content_type}
    async with s.system.http.post(s.api + "/v1/uploads", data=body, headers=headers) as r:
        status, kind = r.status, r.content_type
        answer = await r.json() if kind == "application/json" else await r.text()
    assert (status, kind) == (400, "application/json"), answer
    assert answer["error"].startswith("not a readable multipart form"), answer


async def test_a_token_label_holds_no_control_or_text_direction_characters(s: AgentSystem) -> None:
    """A token's label is shown wherever tokens are listed: the same rule as a display name."""
    status, body = await s.call("POST", "/v1/agents/ava/tokens", body={"label": "desk\r\nBcc: x@example.com"})
    assert (status, body) == (400, {"error": "label may not hold control or text-direction characters (U+000D)"})
    status, body = await s.call("POST", "/v1/agents/ava/tokens", body={"label": "Ava's desk 👩\u200d💻"})
    assert status == 201 and body["label"] == "Ava's desk 👩\u200d💻", body


async def test_a_nul_in_a_query_or_a_path_is_a_400_that_says_where(s: AgentSystem) -> None:
    """No value kept can hold a NUL: the customer search handed it to SQLite's full-text query
    as an unterminated string (and PostgreSQL refuses NUL in text): a 500 each."""
    refused = {
        "/v1/customers?q=%00ab": "query parameter 'q'",
        "/v1/customers?q=abc%00": "query parameter 'q'",
        "/v1/customers?tier=gold&q=ab%00cd": "query parameter 'q'",
        "/v1/conversations/cv_x%00y": "path part {id}",
        "/v1/dlq/%00": "path part {key}",  # a 404 before (a key the bucket could not take)
    }
    for path, where in refused.items():
        async with s.system.http.get(URL(s.api + path, encoded=True), headers=AUTH) as r:
            body = await r.json()
            assert (r.status, body["error"].split(" holds")[0]) == (400, where), (path, body)
    status, body = await s.call("GET", "/v1/customers?q=abc")  # the same search without it
    assert status == 200, body


async def test_a_query_parameter_given_twice_is_a_400_on_every_route(s: AgentSystem) -> None:
    """No route takes a list in its query, and each read the first of the values (found by a
    fuzzing audit: ``?limit=&limit=<junk>`` answered 200, ``?agent=ava&agent=bruno`` acted for
    ava): a proxy or a gateway's rule reading another value would see another request."""
    refused = {
        ("GET", "/v1/agents?limit=1&limit=abc"): "limit",
        ("GET", "/v1/agent/me?agent=ava&agent=bruno"): "agent",
        ("GET", "/v1/customers?q=ab&tier=gold&q=cd"): "q",
        ("GET", "/v1/conversations?status=resolved&status=resolved"): "status",  # even the same value
        ("POST", "/v1/agent/status?agent=ava&agent=bruno"): "agent",
        ("GET", "/healthz?probe=1&probe=2"): "probe",  # a route that reads no query at all
    }
    for (method, path), name in refused.items():
        status, _, _, body = await raw(s, method, path, json={"status": "away"} if method == "POST" else None)
        assert (status, body) == (400, {"error": f"query parameter {name!r} is given 2 times: give it once"}), path
    for agent in ("ava", "bruno"):  # the refused POST set neither agent away
        status, body = await s.call("GET", f"/v1/agents/{agent}")
        assert status == 200 and body["status"] == "available", body
    for path in ("/v1/agents?limit=1", "/v1/customers?q=ab&tier=gold", "/healthz?probe=1"):
        assert (await raw(s, "GET", path))[0] == 200, path


async def test_a_path_part_the_document_patterns_is_refused_outside_it(s: AgentSystem) -> None:
    """Found by a fuzzing audit: a customer id was any string by the document, and every
    customer route refused one that is no subject token. Each path part with a pattern in the
    document: a real id fits it, and one outside it is 400 on every route that has it."""
    from services.contracts import generate

    customer, _ = await s.open()
    bodies = {
        "/v1/customers/{id}/identities": {"identity": "sms:+15551234567"},
        "/v1/customers/{id}/merge": {"other": customer},
    }
    tried = []
    for template, operations in generate("openapi")["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                pattern = param.get("schema", {}).get("pattern")
                if param.get("in") != "path" or pattern is None:
                    continue
                assert re.fullmatch(pattern, customer), (template, pattern)
                for bad in ("a.b", "x" * (param["schema"]["maxLength"] + 1), "ab%20cd"):
                    path = template.replace("{" + param["name"] + "}", bad).replace("{identity}", "sms:+15551234567")
                    status, _, _, body = await raw(s, method.upper(), path + "?reason=x", json=bodies.get(template))
                    assert (status, body) == (400, {"error": "not a customer id"}), (method, template, bad)
                tried.append((method, template))
    assert len(tried) == 9, tried  # every route under /v1/customers/{id}
