"""Canned replies kept by the API: a supervisor adds, changes and removes the team's replies
without a restart; agents see them beside the config file's, filled for their conversation;
the file's own stay the file's; retries and concurrent saves lose nothing and add nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import pytest

from events.streams import CANNED_BUCKET
from services.api.canned_store import KEY, CannedStore, Document, StoredReply
from services.api.console_settings import CannedReply, ConsoleSettings
from services.bus.embedded import EmbeddedNats
from services.config import AgentSeed

from .helpers import AgentSystem, agent_system, agents_config, ok

pytestmark = pytest.mark.integration

HELLO = CannedReply(id="hello", title="Greeting", text="Hi {customer.name}!")


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    config = agents_config(tmp_path, clean_nats.url)
    config.agents = (
        AgentSeed(id="ava", name="Ava", skills={"billing": 3}, languages={"en": 5}),
        AgentSeed(id="sam", name="Sam", skills={"billing": 5}, languages={"en": 5}, tier=3, status="away"),
    )
    config.console = ConsoleSettings(canned_replies=(HELLO,))
    async with agent_system(config, clean_nats) as system:
        yield system


async def titles(s: AgentSystem, token: str) -> dict[str, str]:
    return {r["id"]: r["title"] for r in (await ok(s, "GET", "/v1/canned-replies", token))["canned_replies"]}


async def test_a_supervisor_keeps_the_teams_replies_and_agents_use_them(s: AgentSystem) -> None:
    sam = (await ok(s, "POST", "/v1/agents/sam/tokens", body={"role": "supervisor"}))["token"]
    ava, _ = await s.issue_token("ava")
    refund = {"title": "Refund", "text": "{agent.name} here: your refund for {conversation.id} is on its way."}

    status, body = await s.call("PUT", "/v1/canned-replies/refund", sam, refund)
    assert (status, body["id"]) == (201, "refund"), body
    status, body = await s.call("PUT", "/v1/canned-replies/refund", sam, refund)  # a retry
    assert status == 200, body
    assert await titles(s, ava) == {"hello": "Greeting", "refund": "Refund"}

    # Filled for the agent's conversation, the file's and the team's alike.
    _, cid = await s.open()
    await s.offered_to(cid, "ava")
    await ok(s, "POST", f"/v1/conversations/{cid}/accept", ava)
    filled = {
        r["id"]: r["text"]
        for r in (await ok(s, "GET", f"/v1/conversations/{cid}/canned-replies", ava))["canned_replies"]
    }
    assert filled["refund"] == f"Ava here: your refund for {cid} is on its way."

    # Changed, then removed; a second removal is safe.
    await ok(s, "PUT", "/v1/canned-replies/refund", sam, {"title": "Refund sent", "text": "Sent."})
    assert (await titles(s, ava))["refund"] == "Refund sent"
    assert (await ok(s, "DELETE", "/v1/canned-replies/refund", sam)) == {"id": "refund", "removed": True}
    assert (await ok(s, "DELETE", "/v1/canned-replies/refund", sam)) == {"id": "refund", "removed": False}
    assert await titles(s, ava) == {"hello": "Greeting"}

    # The bucket keeps who changed it and the versions before.
    nc = await nats.connect(s.system.nats.url)
    try:
        kv = await nc.jetstream().key_value(CANNED_BUCKET)
        versions = [msgspec.json.decode(e.value) for e in await kv.history(KEY) if e.value]
        assert [r["updated_by"] for v in versions for r in v["replies"]][:1] == ["supervisor:sam"]
        assert len(versions) == 3  # added, changed, removed (the retry stored nothing)
    finally:
        await nc.close()


async def test_what_a_canned_reply_may_not_be(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    cases = [
        ("PUT", "/v1/canned-replies/hello", {"title": "x", "text": "y"}, 409, "set in the configuration file"),
        ("DELETE", "/v1/canned-replies/hello", None, 409, "set in the configuration file"),
        ("PUT", "/v1/canned-replies/bad%20id", {"title": "x", "text": "y"}, 400, "id must be"),
        ("PUT", "/v1/canned-replies/x", {"title": "x", "text": "Hi {customer.email}"}, 400, "unknown placeholder"),
        ("PUT", "/v1/canned-replies/x", {"title": " ", "text": "y"}, 400, "title must be"),
        ("PUT", "/v1/canned-replies/x", {"title": "x", "text": "y" * 4001}, 400, "text must be"),
        ("PUT", "/v1/canned-replies/x", {"title": "x"}, 400, "text"),
        ("PUT", "/v1/canned-replies/x", {"title": "x", "text": "y", "tone": "warm"}, 400, "unknown field"),
    ]
    for method, path, body, status, reason in cases:
        got, answer = await s.call(method, path, body=body)
        assert (got, reason in answer.get("error", "")) == (status, True), (method, path, answer)
    # An agent reads them, and changes none.
    got, answer = await s.call("PUT", "/v1/canned-replies/mine", ava, {"title": "x", "text": "y"})
    assert got == 403, answer
    assert await titles(s, ava) == {"hello": "Greeting"}


async def test_saves_at_once_are_all_kept(s: AgentSystem) -> None:
    """Each save is a compare-and-set of one document: saves racing each other (two
    supervisors, two API processes) are each kept, none overwrites another."""
    answers = await asyncio.gather(
        *(s.call("PUT", f"/v1/canned-replies/r{i}", body={"title": f"R{i}", "text": "ok"}) for i in range(12))
    )
    assert [status for status, _ in answers] == [201] * 12, answers
    assert set(await titles(s, (await s.issue_token("ava"))[0])) == {"hello", *(f"r{i}" for i in range(12))}


async def test_replies_too_large_together_are_refused_and_the_kept_ones_stay(s: AgentSystem) -> None:
    """The replies are one NATS message: a save that would take the document past its limit is
    409 naming it (it was a 500 once the document passed NATS's max_payload), and nothing of it
    is stored. Control characters take six bytes each in JSON, so few replies get there."""
    heavy = {"title": "t" * 200, "text": "\u0001" * 4000}
    refused: tuple[int, dict[str, object]] | None = None
    for i in range(60):
        status, body = await s.call("PUT", f"/v1/canned-replies/r{i}", body=heavy)
        if status != 201:
            refused = (i, body)
            assert status == 409, (i, status, body)
            break
    assert refused is not None, "60 replies of 24 KB each were all kept: past NATS's max_payload"
    count, body = refused
    assert "shorten or remove some" in str(body["error"]), body
    kept = await titles(s, (await s.issue_token("ava"))[0])
    assert set(kept) == {"hello", *(f"r{i}" for i in range(count))}
    # A removal still works, and makes room again.
    await ok(s, "DELETE", "/v1/canned-replies/r0")
    status, body = await s.call("PUT", f"/v1/canned-replies/r{count}", body=heavy)
    assert status == 201, body


async def test_a_team_reply_whose_id_the_file_took_later_is_listed_once_and_can_be_removed(s: AgentSystem) -> None:
    """Found in review: a team reply saved before the config file gained the same id was listed
    twice and could not be removed (every DELETE was 409 'set in the configuration file')."""
    nc = await nats.connect(s.system.nats.url)
    try:
        store = CannedStore(nc.jetstream)
        stale = StoredReply(
            id="hello", title="Old hello", text="Hi", updated_at=datetime.now(UTC), updated_by="operator"
        )

        def add(document: Document) -> bool:
            document.replies = [*document.replies, stale]
            return True

        await store.change(add)
    finally:
        await nc.close()
    listed = (await ok(s, "GET", "/v1/canned-replies"))["canned_replies"]
    assert [(r["id"], r["title"], r["source"]) for r in listed] == [("hello", "Greeting", "config")]
    assert (await ok(s, "DELETE", "/v1/canned-replies/hello")) == {"id": "hello", "removed": True}
    status, body = await s.call("DELETE", "/v1/canned-replies/hello")
    assert status == 409 and "set in the configuration file" in body["error"], body
