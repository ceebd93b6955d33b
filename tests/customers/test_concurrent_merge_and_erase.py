"""A merge and an erasure sent twice at once (a client that timed out and retried without
waiting, or two operators), over a real nats-server with intake, router, projector and API.
Found by a retry audit: both merges answered 200 and the log got two ``CustomersMerged`` (now
one writes it and the other answers ``already_merged``); of two erasures one was a 500
("sequence N not found", a message the other had just erased)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from events import subjects
from events.model import ConversationOpened, ConversationResolved, CustomerErased, CustomersMerged
from events.store import EventStore
from services.bus.embedded import EmbeddedNats
from tests.customers.helpers import Desk, running_desk
from tests.integration.system import API_TOKEN

pytestmark = pytest.mark.integration


@pytest.fixture
async def desk(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[Desk]:
    async with running_desk(tmp_path, clean_nats) as d:
        yield d


async def send(desk: Desk, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with desk.system.http.request(method, desk.system.api + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_a_merge_and_an_erasure_sent_twice_at_once_are_done_once(desk: Desk) -> None:
    await desk.write("sms", "+15550002222", "SMS from Bo: where is my parcel?")
    await desk.write("email", "bo@example.com", "Email from Bo: about that parcel")
    bo = await desk.customer_of("sms:+15550002222")
    other = await desk.customer_of("email:bo@example.com")
    await desk.timeline_texts(bo, "SMS from Bo: where is my parcel?")
    await desk.timeline_texts(other, "Email from Bo: about that parcel")
    as_stored = EventStore(desk.nc, desk.nc.jetstream())

    merge = f"/v1/customers/{bo}/merge"
    answers = await asyncio.gather(*(send(desk, "POST", merge, {"other": other}) for _ in range(2)))
    assert [status for status, _ in answers] == [200, 200], answers
    # One did it, the other says it was done already (once both were 200 and merged twice).
    assert sorted(body["already_merged"] for _, body in answers) == [False, True], answers
    merges = [s.event for s in await as_stored.read(subjects.customer_scope(bo))]
    assert [e.merged_id for e in merges if isinstance(e, CustomersMerged)] == [other]

    erase = f"/v1/customers/{bo}"
    answers = await asyncio.gather(*(send(desk, "DELETE", erase, {"reason": "DSR-7"}) for _ in range(2)))
    assert [status for status, _ in answers] == [200, 200], answers
    family = [s.event for c in (bo, other) for s in await as_stored.read_customer(c)]
    assert sum(isinstance(e, CustomerErased) for e in family) == 1
    opened = sorted(e.conversation_id for e in family if isinstance(e, ConversationOpened))
    resolved = sorted(e.conversation_id for e in family if isinstance(e, ConversationResolved))
    assert len(opened) == 2 and resolved == opened  # each conversation resolved once
