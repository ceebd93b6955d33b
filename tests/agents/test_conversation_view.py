"""``GET /v1/conversations/{id}`` shows what the router applies now, not only what intake
asked for: after a decline and an escalation the operator sees why it waits."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.bus.embedded import EmbeddedNats

from .helpers import agent_system, agents_config, eventually

pytestmark = pytest.mark.integration


async def test_the_effective_requirements_follow_declines_and_escalations(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        _, cid = await s.open(language="en", text="my invoice")
        conv = await eventually(lambda: s.conversation(cid, "offered"))
        assert conv["effective"]["excluded_agents"] == [] and conv["effective"]["min_tier"] == 1

        status, body = await s.call("POST", f"/v1/conversations/{cid}/decline", body={})
        assert status == 200, body
        # Nobody here is tier 2: it waits for one (queue_anyway), as a team expecting a specialist would.
        escalation = {"to_tier": 2, "reason": "legal", "queue_anyway": True}
        status, body = await s.call("POST", f"/v1/conversations/{cid}/escalate", body=escalation)
        assert status == 200, body

        status, conv = await s.call("GET", f"/v1/conversations/{cid}")
        assert status == 200, conv
        assert conv["requirements"]["min_tier"] == 1  # what intake asked for
        effective = conv["effective"]
        assert effective["min_tier"] == 2 and effective["excluded_agents"] == ["ava"]
        assert effective["languages"] == ["en"] and effective["skills"] == conv["requirements"]["skills"]
