"""Agent tokens and the agent API over a real nats-server: an agent acts only on its own
offers and assignments, a revoked token is refused, the live stream carries the offer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from events import subjects
from events.model import AgentStatusChanged, AgentTokenIssued, OfferAccepted, ReplyRequested

from .helpers import API_TOKEN, AgentSystem, eventually

pytestmark = pytest.mark.integration


async def test_agent_tokens_are_issued_by_operators_hashed_and_revocable(s: AgentSystem) -> None:
    ava, ava_id = await s.issue_token("ava")
    assert ava.startswith("rdat_") and len(ava) > 40
    # Only the hash is in the log.
    issued = [e.event for e in await s.store.read("rd.evt.a.ava") if isinstance(e.event, AgentTokenIssued)]
    assert len(issued) == 1 and issued[0].token_id == ava_id and ava not in msgspec.json.encode(issued[0]).decode()
    assert issued[0].actor == "operator"

    status, me = await s.call("GET", "/v1/agent/me", ava)
    assert status == 200, me
    assert me["actor"] == "agent:ava" and me["agent"]["id"] == "ava"
    # An agent does not manage tokens, nor reach operator endpoints.
    status, body = await s.call("POST", "/v1/agents/ava/tokens", ava)
    assert status == 403, body
    status, body = await s.call("GET", "/v1/dlq", ava)
    assert status == 403 and "operator" in body["error"]
    status, body = await s.call("GET", "/v1/deliveries", ava)
    assert status == 403, body
    status, body = await s.call("GET", "/v1/agents/ava", ava)
    assert status == 200, body
    status, body = await s.call("GET", "/v1/agents/bruno", ava)
    assert status == 403, body

    status, body = await s.call("GET", "/v1/agent/work", "rdat_not-a-real-token")
    assert status == 401, body
    status, body = await s.call("GET", "/v1/agents/ava/tokens")
    assert status == 200 and [t["token_id"] for t in body["tokens"]] == [ava_id]
    status, body = await s.call("DELETE", f"/v1/agents/ava/tokens/{ava_id}")
    assert status == 200 and body["revoked"] is True
    status, body = await s.call("GET", "/v1/agent/work", ava)
    assert status == 401, body
    status, body = await s.call("DELETE", "/v1/agents/bruno/tokens/" + ava_id)
    assert status == 404, body


async def test_an_agent_acts_only_on_its_own_offers(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    bruno, _ = await s.issue_token("bruno")
    customer, cid = await s.open()
    conv = await eventually(lambda: s.conversation(cid, "offered"))
    assert conv["agent_id"] == "ava"

    status, work = await s.call("GET", "/v1/agent/work", ava)
    assert status == 200 and [c["id"] for c in work["offers"]] == [cid]
    status, work = await s.call("GET", "/v1/agent/work", bruno)
    assert status == 200 and work["offers"] == [] and work["assigned"] == []

    for action in ("accept", "decline", "reply", "resolve"):
        status, body = await s.call("POST", f"/v1/conversations/{cid}/{action}", bruno, {"text": "hi"})
        assert status == 403, (action, body)
        assert body["error"] == f"conversation {cid} is not offered or assigned to you"
    status, body = await s.call("GET", f"/v1/customers/{customer}/timeline", bruno)
    assert status == 403, body

    for action in ("reply", "transfer", "escalate", "resolve"):
        status, body = await s.call("POST", f"/v1/conversations/{cid}/{action}", ava, {"text": "hi", "to_tier": 2})
        assert status == 403, (action, body)
        assert body["error"] == f"conversation {cid} is offered to you: accept it first"
    status, body = await s.call("POST", f"/v1/conversations/{cid}/accept", ava, {})
    assert status == 200, body
    assert body["conversation"]["status"] == "assigned"
    status, body = await s.call("POST", f"/v1/conversations/{cid}/accept", ava, {})
    assert status == 403 and "no open offer" in body["error"]
    for action in ("accept", "decline"):  # the operator may try, and is told why not
        status, body = await s.call("POST", f"/v1/conversations/{cid}/{action}", API_TOKEN, {})
        assert (status, body) == (
            409,
            {"error": f"conversation {cid} has no open offer", "conversation_status": "assigned"},
        )
    for invisible in ("", "  \n", "\u200b", "\u200d\ufeff\u2060", "\u3164"):  # a blank bubble for the customer
        status, body = await s.call("POST", f"/v1/conversations/{cid}/reply", ava, {"text": invisible})
        assert (status, body) == (400, {"error": "text is empty"}), invisible
        status, body = await s.call("POST", f"/v1/conversations/{cid}/notes", ava, {"text": invisible})
        assert (status, body) == (400, {"error": "text is empty"}), invisible
    status, body = await s.call("POST", f"/v1/conversations/{cid}/reply", ava, {"text": "Happy to help!"})
    assert status == 202, body

    events = [e.event for e in await s.log(customer)]
    accepted = [e for e in events if isinstance(e, OfferAccepted)]
    replies = [e for e in events if isinstance(e, ReplyRequested)]
    assert accepted[0].actor == "agent:ava"
    assert replies[0].actor == "agent:ava" and replies[0].text == "Happy to help!" and replies[0].agent_id == "ava"

    # Operators act on any conversation.
    _, other = await s.open()
    await eventually(lambda: s.conversation(other, "offered"))
    status, body = await s.call("POST", f"/v1/conversations/{other}/decline", API_TOKEN, {})
    assert status == 200, body
    # Status through the agent API, with the actor on the event.
    status, body = await s.call("POST", "/v1/agent/status", ava, {"status": "away"})
    assert status == 200 and body["status"] == "away"
    changes = [e.event for e in await s.store.read("rd.evt.a.ava") if isinstance(e.event, AgentStatusChanged)]
    assert changes[-1].status == "away" and changes[-1].actor == "agent:ava"


@contextlib.asynccontextmanager
async def live_stream(s: AgentSystem, token: str) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    """The frames of ``token``'s live stream as they come, once its first ``work`` frame has."""
    frames: list[tuple[str, dict[str, Any]]] = []
    async with s.system.http.get(s.api + "/v1/agent/stream", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        reader = asyncio.create_task(_read_frames(r, frames))
        try:
            await eventually(_has(frames, "work"))
            yield frames
        finally:
            reader.cancel()


async def test_the_live_stream_carries_the_agents_offer(s: AgentSystem) -> None:
    ava, ava_token_id = await s.issue_token("ava")
    async with live_stream(s, ava) as frames:
        _, cid = await s.open()
        offered = await eventually(_has(frames, "agent_offered"))
        assert offered["conversation_id"] == cid and offered["agent_id"] == "ava"
        assert offered["seq"] > 0
        # Revoking the token ends the stream.
        status, _ = await s.call("DELETE", f"/v1/agents/ava/tokens/{ava_token_id}")
        assert status == 200
        await eventually(_has(frames, "revoked"))
    # Bruno's stream does not see Ava's offers.
    bruno, _ = await s.issue_token("bruno")
    async with live_stream(s, bruno) as bruno_frames:
        await s.open()
        await asyncio.sleep(1.0)
        assert [k for k, _ in bruno_frames] == ["work"]
    status, _ = await s.call("GET", "/v1/agent/stream", "nope")
    assert status == 401


async def test_deactivating_the_agent_ends_her_live_stream(s: AgentSystem) -> None:
    """Her tokens are refused once she is deactivated: an open stream kept delivering her
    events (found by an attack test)."""
    bruno, _ = await s.issue_token("bruno")
    async with live_stream(s, bruno) as frames:
        assert (await s.call("DELETE", "/v1/agents/bruno", body={"reason": "left the team"}))[0] == 200
        revoked = await eventually(_has(frames, "revoked"))
        assert revoked == {"error": "agent bruno is deactivated"}


def _has(frames: list[tuple[str, dict[str, Any]]], kind: str) -> Any:
    async def probe() -> dict[str, Any] | None:
        return next((data for k, data in frames if k == kind), None)

    return probe


async def _read_frames(response: aiohttp.ClientResponse, out: list[tuple[str, dict[str, Any]]]) -> None:
    kind, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and data:
            out.append((kind, msgspec.json.decode(data)))
            kind, data = "message", ""


async def test_a_stream_resumed_with_last_event_id_gets_what_it_missed_exactly_once(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    headers = {"Authorization": f"Bearer {ava}"}
    first: list[tuple[str, dict[str, Any]]] = []
    async with s.system.http.get(s.api + "/v1/agent/stream", headers=headers) as r:
        reader = asyncio.create_task(_read_frames(r, first))
        try:
            await eventually(_has(first, "work"))
            _, one = await s.open()
            seen = await eventually(_has(first, "agent_offered"))
            assert seen["conversation_id"] == one
        finally:
            reader.cancel()

    _, two = await s.open()  # offered while the client is away
    await eventually(lambda: s.conversation(two, "offered"))
    again: list[tuple[str, dict[str, Any]]] = []
    resume = {**headers, "Last-Event-ID": str(seen["seq"])}
    async with s.system.http.get(s.api + "/v1/agent/stream", headers=resume) as r:
        reader = asyncio.create_task(_read_frames(r, again))
        try:
            await eventually(_has(again, "agent_offered"))
            _, three = await s.open()  # and one while it is back
            await eventually(lambda: _offers(again, 2))
            await asyncio.sleep(0.5)
        finally:
            reader.cancel()
    offers = [data["conversation_id"] for kind, data in again if kind == "agent_offered"]
    assert offers == [two, three]  # not the one seen before, nothing twice
    seqs = [data["seq"] for kind, data in again if kind != "work"]
    assert seqs == sorted(set(seqs))


async def test_open_streams_cost_the_nats_server_no_consumers(s: AgentSystem) -> None:
    async def consumers() -> int:
        info = await s.store.js.stream_info(subjects.EVENTS_STREAM)
        return int(info.state.consumer_count)

    before = await consumers()
    operator = {"Authorization": f"Bearer {API_TOKEN}"}
    responses = [await s.system.http.get(s.api + "/v1/agent/stream", headers=operator) for _ in range(20)]
    try:
        assert all(r.status == 200 for r in responses)
        frames: list[tuple[str, dict[str, Any]]] = []
        reader = asyncio.create_task(_read_frames(responses[-1], frames))
        await s.open()
        await eventually(lambda: _offers(frames, 1))
        # Other services' short reads come and go; twenty streams with a consumer each would not.
        assert await consumers() < before + 10
        reader.cancel()
    finally:
        for r in responses:
            r.release()


def _offers(frames: list[tuple[str, dict[str, Any]]], n: int) -> Any:
    async def probe() -> bool:
        return sum(kind == "agent_offered" for kind, _ in frames) >= n

    return probe()
