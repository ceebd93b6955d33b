"""Who may take an address away (``DELETE /v1/customers/{id}/identities/{identity}``): the
operator only. An agent, even one holding the customer's conversation, and a supervisor get 403,
also when the path is written to look like one of her own desk's (``/v1/agent/…``) or with the
address percent-encoded; nothing is written to the log. Over the real API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yarl

from events.model import CustomerCreated, IdentityUnlinked
from events.store import Append
from services.bus.embedded import EmbeddedNats
from services.config import AgentSeed

from .helpers import API_TOKEN, AgentSystem, agent_system, agents_config, ok

pytestmark = pytest.mark.integration

NUMBER = "phone:+15550104444"


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    config = agents_config(tmp_path, clean_nats.url)
    config.agents = (
        AgentSeed(id="ava", name="Ava", skills={"billing": 3}, languages={"en": 5}),
        AgentSeed(id="sam", name="Sam", skills={"billing": 5}, languages={"en": 5}, tier=3, status="away"),
    )
    async with agent_system(config, clean_nats) as system:
        yield system


async def _raw(s: AgentSystem, method: str, path: str, token: str) -> tuple[int, Any]:
    """``path`` sent as written (no client normalising ``..`` or decoding ``%2F``)."""
    url = yarl.URL(s.api + path, encoded=True)
    async with s.system.http.request(method, url, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.text()


async def _unlinked(s: AgentSystem, customer: str) -> list[IdentityUnlinked]:
    return [e.event for e in await s.log(customer) if isinstance(e.event, IdentityUnlinked)]


async def test_only_the_operator_takes_an_address_away(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    sam = (await ok(s, "POST", "/v1/agents/sam/tokens", body={"label": "lead", "role": "supervisor"}))["token"]
    customer, cid = await s.open()
    created = CustomerCreated(at=datetime.now(UTC), customer_id=customer, identity=NUMBER)
    await s.store.append(Append(created))
    await s.offered_to(cid, "ava")
    await ok(s, "POST", f"/v1/conversations/{cid}/accept", ava)  # her customer now

    route = f"/v1/customers/{customer}/identities/{NUMBER}"
    for token, role in ((ava, "agent"), (sam, "supervisor")):
        status, body = await s.call("DELETE", route, token, {"reason": "not theirs"})
        assert status == 403, (role, body)
        assert body["error"].startswith(f"{role} tokens may not use this endpoint (operator"), (role, body)
        encoded = f"/v1/customers/{customer}/identities/phone:%2B15550104444"
        tricks = (
            encoded,
            f"/v1/customers/{customer}/identities/phone%3A%2B15550104444?reason=x",
            f"/v1/agent/..%2F..%2Fv1%2Fcustomers%2F{customer}%2Fidentities%2F{NUMBER}",
            f"/v1/agent/../../v1/customers/{customer}/identities/{NUMBER}",
            f"/v1/agent/%2E%2E/%2E%2E{route}",
            f"//v1/customers/{customer}/identities/{NUMBER}",
            f"/v1/customers/{customer}/identities/chat%2F..%2F..%2F{customer}",
        )
        for path in tricks:
            status, text = await _raw(s, "DELETE", path, token)
            assert status in (403, 404), (role, path, status, text)
    assert await _unlinked(s, customer) == []

    # The operator may (the route above is the real one), and the address goes.
    status, body = await s.call("DELETE", route, API_TOKEN, {"reason": "not theirs"})
    assert (status, body["unlinked"]) == (200, True), body
    assert [e.identity for e in await _unlinked(s, customer)] == [NUMBER]
