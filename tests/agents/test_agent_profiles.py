"""``PUT /v1/agents/{id}``: operators add and change agents while Relaydesk runs, and the
router uses the new profile at once."""

from __future__ import annotations

from typing import Any

import pytest

from events.model import DEFAULT_CAPACITY

from .helpers import AgentSystem, eventually

pytestmark = pytest.mark.integration


async def test_an_agent_added_through_the_api_gets_work_for_its_language(s: AgentSystem) -> None:
    german = {"name": "Dora", "skills": {"billing": 2}, "languages": {"de": 5}, "tier": 1, "capacity": {"sms": 1}}
    status, body = await s.call("PUT", "/v1/agents/dora", body=german)
    assert status == 201, body
    # Channels the body leaves out keep their default capacity.
    assert body["capacity"] == {**DEFAULT_CAPACITY, "sms": 1}
    status, _ = await s.call("POST", "/v1/agents/dora/status", body={"status": "available"})
    assert status == 200

    _, first = await s.open(language="de", text="Meine Rechnung ist falsch")
    assert (await eventually(lambda: s.conversation(first, "offered")))["agent_id"] == "dora"

    status, body = await s.call("PUT", "/v1/agents/dora", body={**german, "capacity": {"sms": 3}})
    assert status == 200 and body["capacity"]["sms"] == 3


@pytest.mark.parametrize(
    ("agent_id", "profile", "reason"),
    [
        ("dora", {"tier": 4}, "tier must be 1 (frontline), 2 (specialist) or 3 (supervisor)"),
        ("dora", {"skills": {"billing": 9}}, "skill levels go from 1 to 5"),
        ("dora", {"capacity": {"chat": -1}}, "capacity on chat goes from 0 to 1000 (0 closes the channel), not -1"),
        ("dora", {"max_total": 10**24}, f"max_total goes from 0 to 1000 (null: no overall cap), not {10**24}"),
        ("do ra", {}, "agent id may use letters, digits, '-' and '_' only"),
        ("d" * 129, {}, "agent id takes 1 to 128 characters, not 129"),
    ],
)
async def test_a_bad_profile_is_refused_with_a_reason(
    s: AgentSystem, agent_id: str, profile: dict[str, Any], reason: str
) -> None:
    status, body = await s.call("PUT", f"/v1/agents/{agent_id}", body=profile)
    assert (status, body["error"]) == (400, reason)
    status, body = await s.call("GET", "/v1/agents")
    assert [a["id"] for a in body["agents"]] == ["ava", "bruno"]
