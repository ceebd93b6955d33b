"""Resuming ``/v1/agent/stream`` with ``Last-Event-ID`` sends exactly what a client that stayed
connected received after that id: the events of conversations that left the agent while she
was away, none of the events she was never sent, ids increasing, and a ``work`` frame that
does not move the client past the replayed gap."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from events.model import (
    AgentOffered,
    Attachment,
    ConversationTransferred,
    DecisionReason,
    MessageReceived,
    OfferAccepted,
    OfferExpired,
)
from events.store import Append, StoredEvent
from services.api.stream import HolderJournal
from services.bus.embedded import EmbeddedNats
from services.config import AgentSeed

from .helpers import API_TOKEN, AgentSystem, agent_system, agents_config, eventually, holds

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Frame:
    id: int | None
    kind: str
    data: dict[str, Any]


async def _read_frames(response: aiohttp.ClientResponse, out: list[Frame]) -> None:
    fid: int | None = None
    kind, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            fid = int(line[4:])
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line:
            if data:
                out.append(Frame(fid, kind, msgspec.json.decode(data)))
            fid, kind, data = None, "message", ""


@contextlib.asynccontextmanager
async def following(
    s: AgentSystem, token: str, last_id: int | None = None, *, agent: str | None = None
) -> AsyncIterator[list[Frame]]:
    """The caller's live stream, or with ``agent`` (an operator's token) that agent's."""
    headers = {"Authorization": f"Bearer {token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    frames: list[Frame] = []
    query = f"?agent={agent}" if agent is not None else ""
    async with s.system.http.get(s.api + "/v1/agent/stream" + query, headers=headers) as r:
        assert r.status == 200
        reader = asyncio.create_task(_read_frames(r, frames))
        try:
            await eventually(holds(lambda: any(f.kind == "work" for f in frames)))
            yield frames
        finally:
            reader.cancel()


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    """Ava and Bruno both speak English; Bruno starts away, so new work goes to Ava; offers
    expire after 4 s."""
    config = agents_config(tmp_path, clean_nats.url)
    config.agents = (
        AgentSeed(id="ava", name="Ava", skills={"billing": 3}, languages={"en": 5}),
        AgentSeed(id="bruno", name="Bruno", skills={"billing": 3}, languages={"en": 5}, status="away"),
    )
    config.router = msgspec.structs.replace(config.router, offer_timeout_seconds=4.0)
    async with agent_system(config, clean_nats) as system:
        yield system


def events(frames: list[Frame], after: int, through: int) -> list[Frame]:
    return [f for f in frames if f.kind != "work" and f.id is not None and after < f.id <= through]


def has(frames: list[Frame], kind: str, cid: str, agent: str | None = None, n: int = 1) -> Any:
    def probe() -> Frame | None:
        found = [
            f
            for f in frames
            if f.kind == kind and f.data.get("conversation_id") == cid and agent in (None, f.data.get("agent_id"))
        ]
        return found[n - 1] if len(found) >= n else None

    return holds(probe)


async def customer_writes(
    s: AgentSystem, customer: str, cid: str, text: str = "are you there?", attachments: tuple[Attachment, ...] = ()
) -> str:
    """A customer message on an open conversation, as intake appends it; its message id."""
    message_id = "m-" + uuid.uuid4().hex[:8]
    event = MessageReceived(
        at=datetime.now(UTC),
        customer_id=customer,
        conversation_id=cid,
        channel="sms",
        message_id=message_id,
        provider_message_id="p-" + message_id,
        text=text,
        language="en",
        attachments=attachments,
    )
    await s.store.append(Append(event))
    return message_id


async def operator(s: AgentSystem, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    status, answer = await s.call(method, path, API_TOKEN, body or {})
    assert status < 300, (path, answer)
    return answer


async def test_a_resumed_stream_gets_exactly_what_a_connected_one_got(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    async with following(s, ava) as witness:  # stays connected throughout
        async with following(s, ava) as gone:
            cu1, c1 = await s.open()
            await s.offered_to(c1, "ava")
            status, body = await s.call("POST", f"/v1/conversations/{c1}/accept", ava, {})
            assert status == 200, body
            last = await eventually(has(gone, "offer_accepted", c1))
            assert last.id is not None
        # Ava's client is away from here on.
        cu3, c3 = await s.open()
        await s.offered_to(c3, "ava")
        await customer_writes(s, cu1, c1)  # on a conversation she holds
        status, body = await s.call("POST", f"/v1/conversations/{c1}/reply", ava, {"text": "Yes, I am here."})
        assert status == 202, body
        await operator(s, "POST", "/v1/agents/bruno/status", {"status": "available"})
        # The offer to her expires and goes to Bruno, who takes it: from then on c3 is his.
        await s.offered_to(c3, "bruno")
        await operator(s, "POST", f"/v1/conversations/{c3}/accept", {"agent_id": "bruno"})
        await customer_writes(s, cu3, c3)
        # Her conversation is transferred away; what happens on it afterwards is not hers.
        await operator(s, "POST", f"/v1/conversations/{c1}/transfer", {"to_agent": "bruno"})
        await s.offered_to(c1, "bruno")
        await operator(s, "POST", f"/v1/conversations/{c1}/accept", {"agent_id": "bruno"})
        await customer_writes(s, cu1, c1)
        # And Bruno's conversation comes to her: only from the offer on is it hers.
        await operator(s, "POST", f"/v1/conversations/{c3}/transfer", {"to_agent": "ava"})
        await s.offered_to(c3, "ava")
        await eventually(has(witness, "agent_offered", c3, "ava", n=2))

        async with following(s, ava, last_id=last.id) as resumed:
            # Back live: one more fact after the reconnection reaches both the same way.
            status, body = await s.call("POST", f"/v1/conversations/{c3}/accept", ava, {})
            assert status == 200, body
            final = await eventually(has(witness, "offer_accepted", c3, "ava"))
            await eventually(has(resumed, "offer_accepted", c3, "ava"))
            assert final.id is not None
            stayed = events(witness, last.id, final.id)
            came_back = events(resumed, last.id, final.id)

    assert [(f.id, f.kind, f.data) for f in came_back] == [(f.id, f.kind, f.data) for f in stayed]
    ids = [f.id for f in list(resumed) if f.id is not None]
    assert ids == sorted(set(ids)) and all(i > last.id for i in ids), ids
    # The work frame comes first, does not claim a position past the gap, and says what its
    # lists reflect.
    assert resumed[0].kind == "work" and resumed[0].id is None
    assert resumed[0].data["seq"] >= max(f.id for f in stayed if f.kind == "agent_offered")
    assert [o["id"] for o in resumed[0].data["offers"]] == [c3]

    kinds = [(f.kind, f.data.get("conversation_id")) for f in came_back]
    # What left her while she was away is replayed: the message and her reply on c1, the
    # expiry of her offer on c3, the transfer of c1 away.
    assert ("message_received", c1) in kinds and ("reply_requested", c1) in kinds
    assert ("offer_expired", c3) in kinds and ("conversation_transferred", c1) in kinds
    # What was never hers is not: Bruno's offer and acceptance of c3, the customer's message on
    # c3 while Bruno held it, c1 after it left her.
    offers_and_accepts = [f for f in came_back if f.kind in ("agent_offered", "offer_accepted")]
    assert all(f.data["agent_id"] == "ava" for f in offers_and_accepts)
    transferred_at = next(f.id for f in came_back if f.kind == "conversation_transferred" and f.data["to_agent"])
    assert ("message_received", c3) not in kinds
    assert all(f.data.get("conversation_id") != c1 for f in came_back if f.id is not None and f.id > transferred_at)


async def test_a_stream_resumed_at_its_position_gets_the_work_frame_with_that_id(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    async with following(s, ava) as first:
        _, c1 = await s.open()
        await s.offered_to(c1, "ava")
        status, body = await s.call("POST", f"/v1/conversations/{c1}/accept", ava, {})
        assert status == 200, body
        accepted = await eventually(has(first, "offer_accepted", c1))
    assert first[0].kind == "work" and first[0].id is not None and first[0].id < (accepted.id or 0)
    # Nothing for her happened meanwhile: the resumed stream starts at the client's position,
    # and the next frame is the next fact about her.
    async with following(s, ava, last_id=accepted.id) as again:
        status, body = await s.call("POST", "/v1/agent/status", ava, {"status": "away"})
        assert status == 200, body
        await eventually(holds(lambda: any(f.kind == "agent_status_changed" for f in again)))
        frames = list(again)
    assert [f.kind for f in frames] == ["work", "agent_status_changed"]
    assert frames[0].id == accepted.id and (frames[1].id or 0) > (accepted.id or 0)


def test_the_journal_knows_who_held_what_at_a_recent_id_and_says_when_it_cannot() -> None:
    journal = HolderJournal(keep=3)

    def stored(seq: int, event: Any, cid: str) -> StoredEvent:
        return StoredEvent(seq, f"rd.evt.c.cu1.{cid}", event)

    at = datetime.now(UTC)
    reason = DecisionReason(rule="best_fit")
    history = [
        AgentOffered(at=at, customer_id="cu1", conversation_id="c1", agent_id="ava", expires_at=at, reason=reason),
        OfferExpired(at=at, customer_id="cu1", conversation_id="c1", agent_id="ava"),
        AgentOffered(at=at, customer_id="cu1", conversation_id="c1", agent_id="bruno", expires_at=at, reason=reason),
        OfferAccepted(at=at, customer_id="cu1", conversation_id="c1", agent_id="bruno"),  # no change of holder
        ConversationTransferred(
            at=at, customer_id="cu1", conversation_id="c1", from_agent="bruno", to_agent="ava", transfer_count=1
        ),
    ]
    for seq, event in enumerate(history, start=1):
        journal.apply(stored(seq, event, "c1"))
    assert journal.holders_at(5) == {}
    assert journal.holders_at(4) == journal.holders_at(3) == {"c1": "bruno"}
    assert journal.holders_at(2) == {}
    assert journal.holders_at(1) == {"c1": "ava"}
    assert journal.holders_at(0) is None  # the change at 1 was let go: before it is not known
    assert journal.holders_at(6) is None  # the future is not known either
