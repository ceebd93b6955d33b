"""Tokens shaped like issued ones but unknown cost NATS one look-up at a time, however many.

An agent token this API does not know may have been issued through another API process a moment
ago, so the API reads the log's last agent event and waits for its view to fold it before the 401
(services/api/caught_up.py). Anyone may send such a token: found by a security audit, each was a
NATS read and a waiter of its own, so a flood of made-up tokens was as many reads at once."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import aiohttp
import pytest

from events import subjects
from events.store import EventStore
from services.bus.embedded import EmbeddedNats

from .helpers import agent_system, agents_config, ok

pytestmark = pytest.mark.integration

FLOOD = 200


async def test_a_flood_of_made_up_tokens_shares_its_look_ups(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        real, _ = await s.issue_token("ava")
        reads = 0
        last_subject_seq = EventStore.last_subject_seq

        async def counted(store: EventStore, subject: str) -> int:
            nonlocal reads
            if subject == subjects.AGENT_EVENTS_ALL:
                reads += 1
                await asyncio.sleep(0.2)  # a slow log: the requests overlap
            return await last_subject_seq(store, subject)

        monkeypatch.setattr(EventStore, "last_subject_seq", counted)

        async def made_up(http: aiohttp.ClientSession) -> int:
            headers = {"Authorization": "Bearer rdat_" + secrets.token_urlsafe(32)}
            async with http.get(s.api + "/v1/agents", headers=headers) as resp:
                return resp.status

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=FLOOD)) as http:
            statuses = await asyncio.gather(*(made_up(http) for _ in range(FLOOD)))
        assert statuses == [401] * FLOOD
        assert 1 <= reads <= 6, f"{FLOOD} made-up tokens made {reads} reads of the log"
        # An issued token is as good as before.
        assert "ava" in str(await ok(s, "GET", "/v1/agent/me", real))


async def test_each_caller_gets_a_look_up_begun_after_it_arrived() -> None:
    """A token issued elsewhere just before the request may not be on the log a look-up already
    under way read: a caller arriving then waits for the next one, shared with the others."""
    from services.api.caught_up import SharedCatchUp

    began: list[int] = []
    gates: list[asyncio.Event] = []

    async def look_up() -> None:
        began.append(len(began))
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()

    async def settle() -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    shared = SharedCatchUp(look_up)
    first = asyncio.create_task(shared())
    await settle()
    assert began == [0]
    later = [asyncio.create_task(shared()) for _ in range(5)]  # while the first is under way
    await settle()
    assert began == [0]
    gates[0].set()
    await asyncio.wait_for(first, 5)
    await settle()
    assert not any(task.done() for task in later), "answered by a look-up begun before they came"
    gates[1].set()
    await asyncio.wait_for(asyncio.gather(*later), 5)
    assert began == [0, 1]
    # One that goes away does not stop the look-up it shared with others.
    running = asyncio.create_task(shared())
    await settle()
    gone, stays = asyncio.create_task(shared()), asyncio.create_task(shared())
    await settle()
    gone.cancel()
    gates[2].set()
    await asyncio.wait_for(running, 5)
    await settle()
    gates[3].set()
    await asyncio.wait_for(stays, 5)
    assert began == [0, 1, 2, 3] and gone.cancelled()


async def test_a_look_up_nats_did_not_answer_is_counted_as_skipped() -> None:
    """Every broad except logs what it stepped past and counts it: an unknown token whose
    look-up NATS did not answer is a 401 without the look-up, which ``relaydesk_skipped_total``
    says (it was logged at info level only)."""
    from types import SimpleNamespace

    from events.skips import SKIPPED
    from services.api.caught_up import agent_events

    class Away:
        async def last_subject_seq(self, subject: str) -> int:
            raise TimeoutError

    skipped = SKIPPED.labels(where="api.token_catch_up")
    before = skipped._value.get()
    await agent_events(SimpleNamespace(store=Away()))  # type: ignore[arg-type]
    assert skipped._value.get() == before + 1
