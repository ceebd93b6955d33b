"""What an agent token may read: conversations she holds or held (resolved ones included)
and the customers of those, nothing of anyone else's; customers are never hers to write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from events.model import ConversationAssigned, ConversationResolved, DecisionReason
from events.store import StoredEvent
from router.state import CustomerView, RouterState
from services.api.access import customers_reachable, refusal
from services.api.custody import Custody
from services.bus.embedded import EmbeddedNats
from services.config import AgentSeed

from .helpers import API_TOKEN, AgentSystem, agent_system, agents_config, eventually, ok

pytestmark = pytest.mark.integration


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    """Ava takes new English work; Bruno and Carla speak English too but start away."""
    config = agents_config(tmp_path, clean_nats.url)
    config.agents = (
        AgentSeed(id="ava", name="Ava", skills={"billing": 3}, languages={"en": 5}),
        AgentSeed(id="bruno", name="Bruno", skills={"billing": 3}, languages={"en": 5}, status="away"),
        AgentSeed(id="carla", name="Carla", skills={"billing": 3}, languages={"en": 5}, status="away"),
    )
    async with agent_system(config, clean_nats) as system:
        yield system


async def resolved(s: AgentSystem, cid: str) -> None:
    """Until the timelines (where resolved conversations live on) have it."""
    await eventually(lambda: s.conversation(cid, "resolved"))


async def test_a_resolved_conversation_is_read_only_by_those_who_held_it(s: AgentSystem) -> None:
    ava, bruno, carla = [(await s.issue_token(a))[0] for a in ("ava", "bruno", "carla")]
    # c1: Ava's alone.
    _, c1 = await s.open()
    await s.offered_to(c1, "ava")
    await ok(s, "POST", f"/v1/conversations/{c1}/accept", ava)
    await ok(s, "POST", f"/v1/conversations/{c1}/resolve", ava)
    # c2: Ava's, then transferred to Bruno, who resolves it.
    _, c2 = await s.open()
    await s.offered_to(c2, "ava")
    await ok(s, "POST", f"/v1/conversations/{c2}/accept", ava)
    await ok(s, "POST", "/v1/agents/bruno/status", body={"status": "available"})
    await ok(s, "POST", f"/v1/conversations/{c2}/transfer", ava, {"to_agent": "bruno"})
    await s.offered_to(c2, "bruno")
    await ok(s, "POST", f"/v1/conversations/{c2}/accept", bruno)
    # Still open: Ava held it before, so she reads it; Carla never did.
    assert (await ok(s, "GET", f"/v1/conversations/{c2}", ava))["agent_id"] == "bruno"
    status, body = await s.call("GET", f"/v1/conversations/{c2}", carla)
    assert status == 403 and body["error"] == f"you do not hold and never held conversation {c2}"
    await ok(s, "POST", f"/v1/conversations/{c2}/resolve", bruno)
    await resolved(s, c1)
    await resolved(s, c2)

    for cid, readers, others in ((c1, (ava,), (bruno, carla)), (c2, (ava, bruno), (carla,))):
        for token in readers:
            assert (await ok(s, "GET", f"/v1/conversations/{cid}", token))["status"] == "resolved"
        for token in others:
            status, body = await s.call("GET", f"/v1/conversations/{cid}", token)
            assert status == 403, (cid, body)
            assert body["error"] == f"you do not hold and never held conversation {cid}"
    # Asking for one that does not exist tells an agent nothing either way.
    status, _ = await s.call("GET", "/v1/conversations/cv-none", carla)
    assert status == 403

    async def listed(token: str, query: str = "?status=resolved") -> list[str]:
        return [c["id"] for c in (await ok(s, "GET", "/v1/conversations" + query, token))["conversations"]]

    assert await listed(ava) == [c2, c1]  # most recently resolved first
    assert await listed(bruno) == [c2]
    assert await listed(carla) == []
    assert {c1, c2} <= set(await listed(API_TOKEN))
    status, body = await s.call("GET", "/v1/conversations?status=resolved&agent=ava", bruno)
    assert status == 403 and body["error"] == "an agent token lists only its own conversations"
    # Open ones: only what is offered or assigned to her.
    _, c3 = await s.open()
    await eventually(lambda: s.conversation(c3, "offered"))
    holder = (await ok(s, "GET", f"/v1/conversations/{c3}"))["agent_id"]
    tokens = {"ava": ava, "bruno": bruno}
    assert [c["id"] for c in (await ok(s, "GET", "/v1/conversations", tokens[holder]))["conversations"]] == [c3]
    other = "bruno" if holder == "ava" else "ava"
    assert (await ok(s, "GET", "/v1/conversations", tokens[other]))["conversations"] == []


async def test_an_agent_reads_the_customers_she_serves_or_served_and_writes_none(s: AgentSystem) -> None:
    ava, bruno = [(await s.issue_token(a))[0] for a in ("ava", "bruno")]
    customer, cid = await s.open()
    await s.offered_to(cid, "ava")
    await eventually(lambda: _status(s, f"/v1/customers/{customer}", API_TOKEN, 200))
    # Offered to her: she may look the customer up before accepting.
    assert (await ok(s, "GET", f"/v1/customers/{customer}", ava))["customer_id"] == customer
    assert (await ok(s, "GET", f"/v1/customers/{customer}/timeline", ava))["customer_id"] == customer
    for path in (f"/v1/customers/{customer}", f"/v1/customers/{customer}/timeline"):
        status, body = await s.call("GET", path, bruno)
        assert status == 403 and body["error"] == "you hold no conversation of this customer and never held one"
    # An agent never writes customers, not even hers.
    for method, path, body in (
        ("PUT", f"/v1/customers/{customer}", {"tier": "gold"}),
        ("PATCH", f"/v1/customers/{customer}", {"tier": "gold"}),
        ("POST", f"/v1/customers/{customer}/identities", {"identity": "email:x@example.com"}),
        ("POST", f"/v1/customers/{customer}/merge", {"other": "cu-other"}),
        ("DELETE", f"/v1/customers/{customer}", {"reason": "asked"}),
        ("GET", "/v1/customers?q=cu", None),
    ):
        status, answer = await s.call(method, path, ava, body)
        assert status == 403, (method, path, answer)
        assert answer["error"].startswith("agent tokens may not use this endpoint (operator"), (method, path, answer)
    # Served and resolved: still hers to read (what happened, for a follow-up).
    await ok(s, "POST", f"/v1/conversations/{cid}/accept", ava)
    await ok(s, "POST", f"/v1/conversations/{cid}/resolve", ava)
    await eventually(lambda: _status(s, f"/v1/customers/{customer}", ava, 200))
    await eventually(lambda: _has_entries(s, customer, ava))  # the timeline is a projection: it may lag
    status, _ = await s.call("GET", f"/v1/customers/{customer}", bruno)
    assert status == 403


async def _status(s: AgentSystem, path: str, token: str, wanted: int) -> bool | None:
    status, _ = await s.call("GET", path, token)
    return True if status == wanted else None


async def _has_entries(s: AgentSystem, customer: str, token: str) -> bool:
    return bool((await ok(s, "GET", f"/v1/customers/{customer}/timeline", token))["entries"])


def test_custody_follows_merges_and_survives_a_snapshot() -> None:
    at = datetime.now(UTC)
    custody = Custody()
    subject = "rd.evt.c.cu_email.cv1"
    custody.apply(
        StoredEvent(
            1,
            subject,
            ConversationAssigned(
                at=at,
                customer_id="cu_email",
                conversation_id="cv1",
                agent_id="ava",
                channel="email",
                reason=DecisionReason(rule="best_fit"),
            ),
        )
    )
    custody.apply(StoredEvent(2, subject, ConversationResolved(at=at, customer_id="cu_email", conversation_id="cv1")))
    again = Custody()
    again.load(custody.dump())
    # A snapshot an API before 2026-12-06 saved: a row per conversation.
    older = Custody()
    older.load(msgspec.msgpack.encode([("cv1", "cu_email", ["ava"], 2, 2)]))
    assert older.dump() == again.dump() == custody.dump()
    # The conversation left the routing view; the customer was merged into cu_sms since.
    state = RouterState(customers={"cu_email": CustomerView(merged_into="cu_sms"), "cu_sms": CustomerView()})
    for fold in (custody, again, older):
        assert customers_reachable(state, fold, "ava") == {"cu_email", "cu_sms"}
        assert customers_reachable(state, fold, "bruno") == set()
        assert fold.resolved_of("ava", 10) == ["cv1"]
        assert refusal("agent", "ava", "GET", "/v1/conversations/cv1", state, fold) is None
        assert refusal("agent", "bruno", "GET", "/v1/conversations/cv1", state, fold) is not None
        assert refusal("supervisor", "bruno", "GET", "/v1/conversations/cv1", state, fold) is None


async def test_a_deactivated_agents_tokens_are_refused(s: AgentSystem) -> None:
    carla, _ = await s.issue_token("carla")
    assert (await ok(s, "GET", "/v1/agent/me", carla))["agent"]["id"] == "carla"
    await ok(s, "DELETE", "/v1/agents/carla")
    status, body = await s.call("GET", "/v1/agent/me", carla)
    assert status == 403 and body["error"] == "agent carla is deactivated"
    await ok(s, "POST", "/v1/agents/carla/reactivate")
    assert (await ok(s, "GET", "/v1/agent/me", carla))["agent"]["id"] == "carla"
