"""Issue 12, agents as a team lead manages them, over a real nats-server: partial profile
updates keep what they do not name, skill and language names come from a registry, a
transfer to a skill nobody has is refused, and agents are deactivated (history kept)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from events import subjects
from events.model import DEFAULT_CAPACITY, AgentDeactivated, AgentReactivated

from .helpers import API_TOKEN, AgentSystem, eventually

pytestmark = pytest.mark.integration

AVA = {"name": "Ava", "skills": {"billing": 3}, "languages": {"en": 5}, "tier": 1}


def profile(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in ("name", "skills", "languages", "tier", "capacity", "max_total")}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_capacity_update_keeps_skills_and_languages(s: AgentSystem, method: str) -> None:
    status, body = await s.call(method, "/v1/agents/ava", body={"capacity": {"sms": 1}})
    assert status == 200, body
    assert profile(body) == {**AVA, "capacity": {**DEFAULT_CAPACITY, "sms": 1}, "max_total": None}
    status, body = await s.call("GET", "/v1/agents/ava")
    assert (body["skills"], body["languages"], body["capacity"]["sms"]) == ({"billing": 3}, {"en": 5}, 1)


async def test_any_subset_of_fields_changes_those_fields_only(s: AgentSystem) -> None:
    """A small model check: random subsets by PUT or PATCH against a profile merged by hand
    (skills and languages replace the whole map; capacity changes the channels it names)."""
    choices: dict[str, list[Any]] = {
        "name": ["Ava", "Ava B."],
        "skills": [{"billing": 3}, {"billing": 1, "technical": 4}, {}],
        "languages": [{"en": 5}, {"en": 2, "de": 4}],
        "tier": [1, 2, 3],
        "capacity": [{"sms": 1}, {"chat": 0, "email": 2}, {"social": 4}],
        "max_total": [None, 2, 6],
    }
    expected: dict[str, Any] = {**AVA, "capacity": dict(DEFAULT_CAPACITY), "max_total": None}
    rng = random.Random(12)
    for _ in range(16):
        fields = rng.sample(sorted(choices), rng.randint(1, len(choices)))
        change = {field: rng.choice(choices[field]) for field in fields}
        method = rng.choice(["PUT", "PATCH"])
        status, body = await s.call(method, "/v1/agents/ava", body=change)
        assert status == 200, (method, change, body)
        expected.update({k: v for k, v in change.items() if k != "capacity"})
        expected["capacity"] = {**expected["capacity"], **change.get("capacity", {})}
        assert profile(body) == expected, (method, change)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_new_agent_gets_the_defaults_for_what_the_body_leaves_out(s: AgentSystem, method: str) -> None:
    status, body = await s.call(method, "/v1/agents/dora", body={"skills": {"technical": 2}})
    assert status == 201, body
    assert profile(body) == {
        "name": "",
        "skills": {"technical": 2},
        "languages": {},
        "tier": 1,
        "capacity": DEFAULT_CAPACITY,
        "max_total": None,
    }
    assert body["active"] is True


async def test_unknown_skills_and_languages_are_refused_with_the_closest_name(s: AgentSystem) -> None:
    status, body = await s.call("PATCH", "/v1/agents/ava", body={"skills": {"biling": 3}})
    assert status == 400
    assert body["error"].startswith("unknown skill 'biling' (did you mean 'billing'?)"), body
    assert body["known_skills"] == ["general", "billing", "technical"]
    status, body = await s.call("PUT", "/v1/agents/newbie", body={"languages": {"esp": 5}})
    assert status == 400 and body["error"].startswith("unknown language 'esp' (did you mean 'es'?)"), body
    status, body = await s.call("PATCH", "/v1/agents/ava", body={"skils": {"billing": 3}})
    assert status == 400 and "skils" in body["error"], body
    status, body = await s.call("GET", "/v1/agents")
    assert [a["id"] for a in body["agents"]] == ["ava", "bruno"]
    assert body["agents"][0]["skills"] == {"billing": 3}


async def test_the_registry_lists_skills_and_languages_for_operators_and_agents(s: AgentSystem) -> None:
    token, _ = await s.issue_token("ava")
    for who in (API_TOKEN, token):
        status, body = await s.call("GET", "/v1/skills", who)
        assert (status, body) == (200, {"skills": ["general", "billing", "technical"]})
        status, body = await s.call("GET", "/v1/languages", who)
        assert (status, body) == (200, {"languages": ["en", "es", "fr", "de", "pt", "it"]})


async def test_a_transfer_names_a_known_skill_that_an_active_agent_has(s: AgentSystem) -> None:
    _, cid = await s.open(language="en")
    await eventually(lambda: s.conversation(cid))
    path = f"/v1/conversations/{cid}/transfer"
    status, body = await s.call("POST", path, body={"to_skill": "tecnical"})
    assert status == 400 and body["error"].startswith("unknown skill 'tecnical' (did you mean 'technical'?)"), body
    status, body = await s.call("POST", path, body={"to_skill": "technical"})
    assert (status, body.get("blocking")) == (409, "no agent has skill technical>=1"), body

    # An agent with the skill who is deactivated does not count either.
    assert (await s.call("PUT", "/v1/agents/chen", body={"skills": {"technical": 4}, "languages": {"en": 5}}))[0] == 201
    assert (await s.call("DELETE", "/v1/agents/chen"))[0] == 200
    status, body = await s.call("POST", path, body={"to_skill": "technical"})
    assert (status, body.get("blocking")) == (409, "no agent has skill technical>=1"), body
    status, body = await s.call("POST", path, body={"to_agent": "chen"})
    assert (status, body["error"]) == (409, "agent chen is deactivated"), body

    status, body = await s.call("POST", path, body={"to_skill": "technical", "queue_anyway": True})
    assert status == 200 and body["conversation"]["transfer_count"] == 1, body
    assert (await s.call("POST", "/v1/agents/chen/reactivate"))[0] == 200
    status, body = await s.call("POST", path, body={"to_skill": "technical"})
    assert status == 200 and body["conversation"]["transfer_count"] == 2, body


async def test_deactivating_an_agent_keeps_her_history_and_refuses_her_tokens(s: AgentSystem) -> None:
    token, _ = await s.issue_token("bruno")
    assert (await s.call("GET", "/v1/agents/bruno", token=token))[0] == 200

    status, first = await s.call("DELETE", "/v1/agents/bruno", body={"reason": "left the team"})
    assert status == 200 and first["active"] is False, first
    assert first["skills"] == {"billing": 3}  # the profile is kept
    status, again = await s.call("DELETE", "/v1/agents/bruno")
    assert (status, again) == (200, first)  # safe to retry: same answer, nothing appended
    status, body = await s.call("GET", "/v1/agents")
    assert {a["id"]: a["active"] for a in body["agents"]} == {"ava": True, "bruno": False}

    for path in ("/v1/agents/bruno", "/v1/agent/work"):
        status, body = await s.call("GET", path, token=token)
        assert (status, body) == (403, {"error": "agent bruno is deactivated"}), path

    status, body = await s.call("POST", "/v1/agents/bruno/reactivate")
    assert status == 200 and body["active"] is True, body
    assert (await s.call("POST", "/v1/agents/bruno/reactivate"))[0] == 200
    assert (await s.call("GET", "/v1/agents/bruno", token=token))[0] == 200  # the same token works again

    stored = await s.store.read(subjects.agent("bruno"))
    kinds = [type(e.event) for e in stored if isinstance(e.event, (AgentDeactivated, AgentReactivated))]
    assert kinds == [AgentDeactivated, AgentReactivated]
    assert [e.event.reason for e in stored if isinstance(e.event, AgentDeactivated)] == ["left the team"]
    status, body = await s.call("DELETE", "/v1/agents/nobody")
    assert (status, body) == (404, {"error": "no agent nobody"})


async def test_a_transfer_or_escalation_nobody_could_take_is_refused_and_a_resolved_conversation_says_so(
    s: AgentSystem,
) -> None:
    """Found by an audit: a transfer to a skill only its sender had, or to a tier nobody had,
    was accepted and the work waited for ever; commands on a resolved conversation were 404."""
    _, cid = await s.open(language="en")
    await s.offered_to(cid, "ava")
    status, body = await s.call("POST", f"/v1/conversations/{cid}/accept", body={"agent_id": "ava"})
    assert status == 200, body
    path = f"/v1/conversations/{cid}"
    status, body = await s.call("POST", path + "/transfer", body={"to_agent": "ava"})
    assert (status, body["error"]) == (409, f"ava already holds conversation {cid}"), body
    status, body = await s.call("POST", path + "/transfer", body={"to_tier": 2})
    assert status == 409, body
    assert body["error"].startswith("nobody could take this conversation after the transfer: no agent of tier >= 2")
    status, body = await s.call("POST", path + "/escalate", body={"to_tier": 3})
    assert status == 409 and body["blocking"].startswith("no agent of tier >= 3"), body
    status, body = await s.call("POST", path + "/transfer", body={"to_skill": "billing"})  # bruno can
    assert status == 200, body
    status, body = await s.call("POST", path + "/escalate", body={"to_tier": 3, "queue_anyway": True})
    assert status == 200, body

    status, body = await s.call("POST", path + "/resolve", body={})
    assert status == 200, body
    for action, payload in (("resolve", {}), ("transfer", {"to_skill": "billing"}), ("escalate", {"to_tier": 1})):
        status, body = await s.call("POST", f"{path}/{action}", body=payload)
        assert (status, body.get("conversation_status")) == (409, "resolved"), (action, body)
    status, _ = await s.call("POST", "/v1/conversations/cv_nosuch/resolve", body={})
    assert status == 404
