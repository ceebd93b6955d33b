"""Agent tokens carry the API's proof: one published to the log by anything else is ignored.

Anything with NATS access can append an ``agent_token_issued``; the API counts only tokens
whose proof (HMAC-SHA256 with its signing key over agent id, token id and token hash)
checks, so a hand-made one gets 401 while a token issued through the API works.
"""

from __future__ import annotations

import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from events.model import AgentTokenIssued, AgentTokenRevoked
from events.store import Append, StoredEvent
from services.api.tokens import TokenTable, hash_token, new_token, signing_key, token_proof
from services.bootstrap import SIGNING_KEY_FILE, api_signing_key
from services.config import load

from .helpers import API_TOKEN, AgentSystem

REFUSED = "relaydesk_agent_tokens_refused_total"


def refused() -> float:
    return REGISTRY.get_sample_value(REFUSED) or 0.0


async def forge(s: AgentSystem, agent_id: str, proof: str = "") -> str:
    """Publish an agent_token_issued by hand, as any process with NATS access could."""
    token = new_token()
    event = AgentTokenIssued(
        at=datetime.now(UTC),
        agent_id=agent_id,
        token_id="tk_" + uuid.uuid4().hex[:16],
        token_hash=hash_token(token),
        label="forged",
        actor="operator",
        proof=proof,
    )
    await s.store.append(Append(event))
    return token


@pytest.mark.integration
async def test_a_hand_published_token_gets_401_and_an_issued_one_works(s: AgentSystem) -> None:
    before = refused()
    no_proof = await forge(s, "ava")
    made_up = await forge(s, "ava", proof="0" * 64)
    # Issued after the forgeries: the API answers once its view includes the new token,
    # so by then it has folded the forged ones too.
    issued, issued_id = await s.issue_token("ava")

    status, me = await s.call("GET", "/v1/agent/me", issued)
    assert status == 200 and me["actor"] == "agent:ava", me
    for forged in (no_proof, made_up):
        status, body = await s.call("GET", "/v1/agent/me", forged)
        assert (status, body) == (401, {"error": "invalid token"})
    assert refused() - before == 2
    status, body = await s.call("GET", "/v1/agents/ava/tokens")
    assert status == 200 and [t["token_id"] for t in body["tokens"]] == [issued_id]


@pytest.mark.integration
async def test_a_copy_of_a_revoked_tokens_issue_does_not_revive_it(s: AgentSystem) -> None:
    token, token_id = await s.issue_token("ava")
    original = next(
        e.event
        for e in await s.store.read("rd.evt.a.ava")
        if isinstance(e.event, AgentTokenIssued) and e.event.token_id == token_id
    )
    assert original.proof  # signed by the API
    status, _ = await s.call("DELETE", f"/v1/agents/ava/tokens/{token_id}")
    assert status == 200
    await s.store.append(Append(original))  # replayed by hand, proof and all
    await s.issue_token("ava")  # the API's view now includes the copy
    status, body = await s.call("GET", "/v1/agent/me", token)
    assert status == 401, body


def stored(event: AgentTokenIssued | AgentTokenRevoked, seq: int = 1) -> StoredEvent:
    return StoredEvent(seq=seq, subject=f"rd.evt.a.{event.agent_id}", event=event)


def issued(key: bytes, agent_id: str = "ava", token_id: str = "tk_1") -> tuple[str, AgentTokenIssued]:
    token = new_token()
    token_hash = hash_token(token)
    event = AgentTokenIssued(
        at=datetime.now(UTC),
        agent_id=agent_id,
        token_id=token_id,
        token_hash=token_hash,
        proof=token_proof(key, agent_id, token_id, token_hash),
    )
    return token, event


def test_the_proof_binds_the_agent_and_the_key() -> None:
    key = signing_key("k1", API_TOKEN)
    token, event = issued(key)
    table = TokenTable(key)
    table.apply(stored(event))
    assert table.agent_for(token) == "ava"
    # The same proof claimed for another agent, or checked with another key, is refused.
    moved = AgentTokenIssued(
        at=event.at, agent_id="bruno", token_id="tk_2", token_hash=event.token_hash, proof=event.proof
    )
    table.apply(stored(moved, 2))
    assert table.agent_for(token) == "ava" and table.refused == 1
    rotated = TokenTable(signing_key("k2", API_TOKEN))
    rotated.apply(stored(event))
    assert rotated.agent_for(token) is None and rotated.refused == 1


def test_without_a_configured_key_the_operator_token_derives_one() -> None:
    assert signing_key("", "operator-a") == signing_key("", "operator-a")
    assert signing_key("", "operator-a") != signing_key("", "operator-b")
    assert signing_key("configured", "operator-a") == b"configured"


def test_up_generates_the_signing_key_once_kept_0600(tmp_path: Path) -> None:
    config = load(env={})
    data = tmp_path / "data"
    assert api_signing_key(config, data) == ""  # not generated unless asked
    key = api_signing_key(config, data, generate=True)
    assert len(key) >= 40
    path = data / SIGNING_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api_signing_key(config, data, generate=True) == key
    assert api_signing_key(config, data) == key
    assert sorted(p.name for p in data.iterdir()) == [SIGNING_KEY_FILE]  # no draft left behind
    configured = load(env={"RELAYDESK_API_SIGNING_KEY": "from-env"})
    assert api_signing_key(configured, data) == "from-env"
