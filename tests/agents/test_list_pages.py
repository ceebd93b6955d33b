"""Lists are pages: ``GET /v1/conversations`` and ``GET /v1/agents`` answer a bounded page and a
cursor, and paging while the work changes neither repeats nor skips an item (found by a scale
audit: with 80,000 open conversations and 5,000 agents both answered everything, tens of
megabytes, every 3 s from each supervisor page)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from events.model import (
    AgentOffered,
    AgentProfile,
    AgentProfileUpdated,
    ConversationOpened,
    ConversationResolved,
    DecisionReason,
    NoteAdded,
    Requirements,
    RoutingRequested,
)
from events.store import Append
from services.api.paging import DEFAULT_LIMIT, MAX_LIMIT
from services.bus.embedded import EmbeddedNats

from .helpers import API_TOKEN, ROSTER, AgentSystem, agent_system, agents_config, eventually

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, tzinfo=UTC)
OPEN = DEFAULT_LIMIT + 20


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    """The API alone (no router): the work stays as the test writes it."""
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats, services=("api",)) as system:
        yield system


def _opened(i: int, at: datetime) -> list[Append]:
    customer, cid = f"cu{i:04d}{uuid.uuid4().hex[:6]}", f"cv{uuid.uuid4().hex[:12]}"
    return [
        Append(ConversationOpened(at=at, customer_id=customer, conversation_id=cid, channel="sms", contact="+1555")),
        Append(
            RoutingRequested(
                at=at, customer_id=customer, conversation_id=cid, channel="sms", requirements=Requirements()
            )
        ),
    ]


async def _get(s: AgentSystem, path: str) -> tuple[int, Any, int]:
    async with s.system.http.get(s.api + path, headers={"Authorization": "Bearer " + API_TOKEN}) as r:
        raw = await r.read()
        return r.status, msgspec.json.decode(raw), len(raw)


async def _total(s: AgentSystem, path: str, n: int) -> bool:
    status, body, _ = await _get(s, path)
    return status == 200 and body.get("total") == n


async def test_open_conversations_come_in_pages_that_survive_changes(s: AgentSystem) -> None:
    batch = [a for i in range(OPEN) for a in _opened(i, T0 + timedelta(seconds=i))]
    await s.store.append_many(batch)
    await eventually(lambda: _total(s, "/v1/conversations", OPEN))

    # Bounded by default, and a limit past the maximum is refused, naming the range.
    status, body, size = await _get(s, "/v1/conversations")
    assert status == 200 and len(body["conversations"]) == body["count"] == DEFAULT_LIMIT
    assert body["total"] == OPEN and body["next_cursor"]
    assert size < DEFAULT_LIMIT * 2_000
    status, body, _ = await _get(s, f"/v1/conversations?limit={MAX_LIMIT + 1}")
    assert status == 400 and f"limit goes from 1 to {MAX_LIMIT}" in body["error"]
    status, body, _ = await _get(s, "/v1/conversations?cursor=not-a-cursor")
    assert status == 400 and "cursor" in body["error"]

    # Page by 7 while the work changes between pages: one already listed is offered, one not
    # yet listed resolved, one not yet listed offered, a new one opens. Every conversation open
    # all along is listed exactly once, oldest first.
    seen: list[str] = []
    cursor = None
    changed = False
    while True:
        status, body, _ = await _get(s, "/v1/conversations?limit=7" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        assert len(body["conversations"]) <= 7
        seen += [c["id"] for c in body["conversations"]]
        cursor = body["next_cursor"]
        if not changed:
            changed = True
            first, later = body["conversations"][0], await _all_ids(s)
            gone, moved = later[30], later[40]
            await _offer(s, first)
            await _offer(s, await _conv(s, moved))
            resolved = await _conv(s, gone)
            await s.store.append(
                Append(
                    ConversationResolved(
                        at=T0, customer_id=resolved["customer_id"], conversation_id=gone, actor="operator"
                    )
                )
            )
            await s.store.append_many(_opened(999, T0 + timedelta(days=1)))
            await eventually(lambda: _total(s, "/v1/conversations", OPEN))  # one gone, one came
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "an item was listed twice"
    assert set(later) - {gone} <= set(seen), "an item open all along was skipped"
    assert len(seen) == OPEN  # the new one (opened last) is on the last page


async def _all_ids(s: AgentSystem) -> list[str]:
    status, body, _ = await _get(s, f"/v1/conversations?limit={MAX_LIMIT}")
    assert status == 200 and body["next_cursor"] is None
    return [c["id"] for c in body["conversations"]]


async def _conv(s: AgentSystem, cid: str) -> dict[str, Any]:
    status, body, _ = await _get(s, f"/v1/conversations/{cid}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def _offer(s: AgentSystem, conv: dict[str, Any]) -> None:
    at = datetime.now(UTC)
    await s.store.append(
        Append(
            AgentOffered(
                at=at,
                customer_id=conv["customer_id"],
                conversation_id=conv["id"],
                agent_id="ava",
                expires_at=at + timedelta(hours=1),
                reason=DecisionReason(rule="test"),
            )
        )
    )
    await eventually(lambda: _is_offered(s, conv["id"]))


async def _is_offered(s: AgentSystem, cid: str) -> bool:
    return (await _conv(s, cid))["status"] == "offered"


async def test_agents_come_in_pages(s: AgentSystem) -> None:
    many = DEFAULT_LIMIT + 5
    profile = AgentProfile(name="Agent", skills={"billing": 3}, languages={"en": 5})
    await s.store.append_many(
        [Append(AgentProfileUpdated(at=T0, agent_id=f"ag{i:04d}", profile=profile)) for i in range(many)]
    )
    roster = len(ROSTER)
    await eventually(lambda: _total(s, "/v1/agents", many + roster))
    status, body, _ = await _get(s, "/v1/agents")
    assert status == 200 and len(body["agents"]) == body["count"] == DEFAULT_LIMIT and body["next_cursor"]
    status, body, _ = await _get(s, f"/v1/agents?limit={MAX_LIMIT + 1}")
    assert status == 400 and f"limit goes from 1 to {MAX_LIMIT}" in body["error"]
    ids: list[str] = []
    cursor = None
    while True:
        status, body, _ = await _get(s, "/v1/agents?limit=40" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200 and len(body["agents"]) <= 40
        ids += [a["id"] for a in body["agents"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert ids == sorted(set(ids)) and len(ids) == many + roster


@pytest.fixture
async def with_timelines(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    """The API and the projector (resolved conversations are read from the timelines)."""
    config = agents_config(tmp_path, clean_nats.url)
    async with agent_system(config, clean_nats, services=("api", "projector")) as system:
        yield system


async def _resolved_ids(s: AgentSystem, query: str = "") -> list[str]:
    status, body, _ = await _get(s, f"/v1/conversations?status=resolved&limit={MAX_LIMIT}{query}")
    assert status == 200 and body["next_cursor"] is None, body
    return [c["id"] for c in body["conversations"]]


async def test_resolved_conversations_come_in_pages_that_notes_do_not_reorder(with_timelines: AgentSystem) -> None:
    """Found by a scale audit: ``status=resolved`` took a limit but had no cursor (the
    ``limit`` most recently active, and nothing after them). Now most recently resolved first,
    a page at a time, on a key a resolved conversation keeps."""
    s = with_timelines
    count = 12
    batch: list[Append] = []
    customers: dict[str, str] = {}
    for i in range(count):
        opened = _opened(i, T0 + timedelta(minutes=i))
        first = opened[0].event
        assert isinstance(first, ConversationOpened)
        customers[first.conversation_id] = first.customer_id
        resolution = ConversationResolved(
            at=T0 + timedelta(hours=1, minutes=i // 2),  # pairs resolved in the same second
            customer_id=first.customer_id,
            conversation_id=first.conversation_id,
            actor="operator",
        )
        batch += [*opened, Append(resolution)]
    await s.store.append_many(batch)

    async def all_resolved() -> bool:
        return len(await _resolved_ids(s)) == count

    await eventually(all_resolved)
    everything = await _resolved_ids(s)
    status, body, _ = await _get(s, "/v1/conversations?status=resolved&cursor=not-a-cursor")
    assert status == 400 and "cursor" in body["error"]

    seen: list[str] = []
    cursor = None
    while True:
        path = "/v1/conversations?status=resolved&limit=5" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = await _get(s, path)
        assert status == 200, body
        assert body["count"] == len(body["conversations"]) <= 5
        page = [c["id"] for c in body["conversations"]]
        if not seen:
            # Notes on one listed and on one not listed yet, on the timelines before the next
            # page: written after the resolution, they change nothing of the order.
            await _notes_on(s, {cid: customers[cid] for cid in (page[0], everything[8])})
        seen += page
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == everything  # each once, most recently resolved first


async def _notes_on(s: AgentSystem, conversations: dict[str, str]) -> None:
    at = T0 + timedelta(days=2)
    for cid, customer in conversations.items():
        note = NoteAdded(
            at=at, customer_id=customer, conversation_id=cid, note_id=f"nt{uuid.uuid4().hex[:8]}", text="wrap-up"
        )
        await s.store.append(Append(note))

    async def written() -> bool:
        for cid, customer in conversations.items():
            _, body, _ = await _get(s, f"/v1/customers/{customer}/timeline")
            if not any(e["kind"] == "note" and e["conversation_id"] == cid for e in body.get("entries", [])):
                return False
        return True

    await eventually(written)
