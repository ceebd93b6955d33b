"""``PUT``/``PATCH /v1/agents/{id}`` repeated (a client retrying without a key) or naming
nothing, over a real nats-server: the agent is answered as she is and nothing is appended.
Found by a retry audit: each repeat wrote another ``AgentProfileUpdated`` (a customer's
profile, a deactivation and a reactivation already append nothing when nothing changes)."""

from __future__ import annotations

import pytest

from events import subjects
from events.model import AgentProfileUpdated

from .helpers import AgentSystem, ok

pytestmark = pytest.mark.integration


async def profiles(s: AgentSystem) -> int:
    return sum(isinstance(e.event, AgentProfileUpdated) for e in await s.store.read(subjects.agent("ava")))


async def test_a_repeated_or_empty_profile_change_appends_nothing(s: AgentSystem) -> None:
    first = await ok(s, "PATCH", "/v1/agents/ava", body={"name": "Ava A", "capacity": {"sms": 4}})
    before = await profiles(s)
    again = await ok(s, "PATCH", "/v1/agents/ava", body={"name": "Ava A", "capacity": {"sms": 4}})
    put = await ok(s, "PUT", "/v1/agents/ava", body={"name": "Ava A"})
    empty = await ok(s, "PATCH", "/v1/agents/ava", body={})
    assert again == put == empty == first
    assert await profiles(s) == before
    # A real change still goes through, and keeps what it does not name.
    changed = await ok(s, "PATCH", "/v1/agents/ava", body={"tier": 2})
    assert (changed["tier"], changed["name"], changed["capacity"]["sms"]) == (2, "Ava A", 4)
    assert await profiles(s) == before + 1
