"""Supervisor tokens: everything an agent may do for herself, plus seeing every queue,
conversation, agent and customer, moving work and setting agents' status; no administration.
The role is covered by the token's proof: a role written into the log by hand is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from events.model import AgentStatusChanged, AgentTokenIssued, ConversationTransferred
from events.store import Append, StoredEvent
from services.api.tokens import TokenTable, hash_token, new_token, token_proof
from services.bus.embedded import EmbeddedNats
from services.config import AgentSeed

from .helpers import API_TOKEN, AgentSystem, agent_system, agents_config, eventually, ok

pytestmark = pytest.mark.integration


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    """Ava and Bruno take English work; Sam is their team lead, away (no work of her own)."""
    config = agents_config(tmp_path, clean_nats.url)
    config.agents = (
        AgentSeed(id="ava", name="Ava", skills={"billing": 3}, languages={"en": 5}),
        AgentSeed(id="bruno", name="Bruno", skills={"billing": 3}, languages={"en": 5}, status="away"),
        AgentSeed(id="sam", name="Sam", skills={"billing": 5}, languages={"en": 5}, tier=3, status="away"),
    )
    async with agent_system(config, clean_nats) as system:
        yield system


async def test_a_supervisor_sees_everything_moves_work_and_administers_nothing(s: AgentSystem) -> None:
    issued = await ok(s, "POST", "/v1/agents/sam/tokens", body={"label": "lead", "role": "supervisor"})
    assert issued["role"] == "supervisor"
    sam = issued["token"]
    ava, _ = await s.issue_token("ava")
    status, body = await s.call("POST", "/v1/agents/sam/tokens", API_TOKEN, {"role": "admin"})
    assert status == 400 and "role is one of" in body["error"]
    me = await ok(s, "GET", "/v1/agent/me", sam)
    assert (me["role"], me["actor"], me["agent"]["id"]) == ("supervisor", "supervisor:sam", "sam")
    assert (await ok(s, "GET", "/v1/agent/me", ava))["role"] == "agent"

    customer, cid = await s.open()
    await s.offered_to(cid, "ava")
    await ok(s, "POST", f"/v1/conversations/{cid}/accept", ava)
    # Sees: queues, every conversation, agents, customers.
    await ok(s, "GET", "/v1/queues", sam)
    assert cid in [c["id"] for c in (await ok(s, "GET", "/v1/conversations", sam))["conversations"]]
    assert (await ok(s, "GET", f"/v1/conversations/{cid}", sam))["agent_id"] == "ava"
    assert {a["id"] for a in (await ok(s, "GET", "/v1/agents", sam))["agents"]} == {"ava", "bruno", "sam"}
    assert (await ok(s, "GET", "/v1/agents/ava", sam))["id"] == "ava"
    await eventually(lambda: _reads(s, f"/v1/customers/{customer}", sam))
    await eventually(lambda: _has_entries(s, customer, sam))  # the timeline is a projection: it may lag
    assert (await ok(s, "GET", "/v1/reports/service", sam)) is not None
    # Acts: sets Bruno's status, moves Ava's conversation to him.
    assert (await ok(s, "POST", "/v1/agents/bruno/status", sam, {"status": "available"}))["status"] == "available"
    await ok(s, "POST", f"/v1/conversations/{cid}/transfer", sam, {"to_agent": "bruno"})
    await s.offered_to(cid, "bruno")
    events = [e.event for e in await s.log(customer)]
    moved = [e for e in events if isinstance(e, ConversationTransferred)]
    assert [(e.actor, e.from_agent, e.to_agent) for e in moved] == [("supervisor:sam", "ava", "bruno")]
    changes = [e.event for e in await s.store.read("rd.evt.a.bruno") if isinstance(e.event, AgentStatusChanged)]
    assert changes[-1].actor == "supervisor:sam"
    # ...but does not answer someone else's offer or reply in someone else's conversation.
    status, body = await s.call("POST", f"/v1/conversations/{cid}/accept", sam, {})
    assert status == 403 and body["error"] == f"conversation {cid} is not offered or assigned to you"
    # And her own desk works as an agent's does.
    assert (await ok(s, "POST", "/v1/agent/status", sam, {"status": "available"}))["status"] == "available"
    assert (await ok(s, "GET", "/v1/agent/work", sam))["agent"]["id"] == "sam"

    # No administration: tokens, agent and customer records, parked messages, deliveries.
    for method, path, body in (
        ("POST", "/v1/agents/ava/tokens", {"role": "supervisor"}),
        ("GET", "/v1/agents/ava/tokens", None),
        ("PUT", "/v1/agents/ava", {"tier": 3}),
        ("PATCH", "/v1/agents/ava", {"tier": 3}),
        ("DELETE", "/v1/agents/ava", None),
        ("PUT", f"/v1/customers/{customer}", {"tier": "gold"}),
        ("PATCH", f"/v1/customers/{customer}", {"tier": "gold"}),
        ("POST", f"/v1/customers/{customer}/identities", {"identity": "email:x@example.com"}),
        ("POST", f"/v1/customers/{customer}/merge", {"other": "cu-other"}),
        ("DELETE", f"/v1/customers/{customer}", {"reason": "asked"}),
        ("GET", "/v1/dlq", None),
        ("GET", "/v1/deliveries", None),
        ("GET", "/metrics", None),
    ):
        status, answer = await s.call(method, path, sam, body)
        assert status == 403, (method, path, answer)
        assert answer["error"] == "supervisor tokens may not use this endpoint (operator only)", (method, path)
    # An agent token still reaches none of the supervisor's views.
    for path in ("/v1/queues", "/v1/customers?q=cu", "/v1/reports/service"):
        status, answer = await s.call("GET", path, ava)
        assert status == 403, path
        # Said as it is: a supervisor may (found by an audit: it read "operator only").
        assert answer["error"] == "agent tokens may not use this endpoint (operator and supervisors only)", path


async def _reads(s: AgentSystem, path: str, token: str) -> bool | None:
    status, _ = await s.call("GET", path, token)
    return True if status == 200 else None


async def _has_entries(s: AgentSystem, customer: str, token: str) -> bool:
    return bool((await ok(s, "GET", f"/v1/customers/{customer}/timeline", token))["entries"])


async def test_a_role_written_into_the_log_by_hand_is_refused(s: AgentSystem) -> None:
    # An agent token, re-published with "supervisor" written into it: its proof does not cover
    # that role, so the token never authenticates.
    issued = await ok(s, "POST", "/v1/agents/ava/tokens", body={"label": "ava"})
    original = next(e.event for e in await s.store.read("rd.evt.a.ava") if isinstance(e.event, AgentTokenIssued))
    assert original.role == "agent"
    forged_token = new_token()
    forged = msgspec.structs.replace(
        original, token_id="tk_forged", token_hash=hash_token(forged_token), role="supervisor"
    )
    await s.store.append(Append(forged))
    await s.store.append(Append(msgspec.structs.replace(original, token_id="tk_forged2", role="supervisor")))
    status, _ = await s.call("GET", "/v1/agent/me", forged_token)
    assert status == 401
    me = await ok(s, "GET", "/v1/agent/me", issued["token"])
    assert me["role"] == "agent"


def test_tokens_issued_before_roles_keep_working_as_agent_tokens() -> None:
    key = b"k" * 32
    table = TokenTable(key)
    at = datetime.now(UTC)
    token = new_token()
    # As written before roles existed: no role field, the proof over agent, id and hash only.
    old = {
        "type": "agent_token_issued",
        "at": at.isoformat(),
        "agent_id": "ava",
        "token_id": "tk_old",
        "token_hash": hash_token(token),
        "proof": token_proof(key, "ava", "tk_old", hash_token(token)),
    }
    event = msgspec.json.decode(msgspec.json.encode(old), type=AgentTokenIssued)
    table.apply(StoredEvent(1, "rd.evt.a.ava", event))
    record = table.record_for(token)
    assert record is not None and record.role == "agent"
    # A snapshot saved before roles (six fields a row) loads as agent tokens.
    legacy = msgspec.msgpack.encode([("ava", "tk_old", hash_token(token), "", at.isoformat(), False)])
    again = TokenTable(key)
    again.load(legacy)
    assert again.record_for(token) is not None and again.record_for(token).role == "agent"  # type: ignore[union-attr]
    again.load(table.dump())
    assert again.record_for(token) is not None


def test_the_proof_covers_the_role() -> None:
    key = b"k" * 32
    token = new_token()
    at = datetime.now(UTC)
    agent_proof = token_proof(key, "ava", "tk_1", hash_token(token))
    assert agent_proof != token_proof(key, "ava", "tk_1", hash_token(token), "supervisor")
    issued = AgentTokenIssued(
        at=at, agent_id="ava", token_id="tk_1", token_hash=hash_token(token), proof=agent_proof, role="supervisor"
    )
    table = TokenTable(key)
    table.apply(StoredEvent(1, "rd.evt.a.ava", issued))  # the agent token's event, role flipped
    assert table.record_for(token) is None and table.refused == 1
    table.apply(StoredEvent(2, "rd.evt.a.ava", msgspec.structs.replace(issued, role="agent")))
    assert table.record_for(token) is not None and table.record_for(token).role == "agent"  # type: ignore[union-attr]
