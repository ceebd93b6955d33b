"""``EventStore.append_many``: a failure other than a conflict is raised only once every
other append of the batch has ended, so nothing is left running behind the caller's back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from events.model import AgentStatusChanged
from events.store import Append, ConcurrencyError, EventStore


class SlowStore(EventStore):
    """The real pipelining over a stand-in for the one-event append."""

    def __init__(self) -> None:
        super().__init__(None, None)  # type: ignore[arg-type]
        self.finished: list[str] = []

    async def append(self, item: Append) -> int:
        if item.msg_id == "broken":
            raise TimeoutError("nats: timeout")
        if item.msg_id == "conflict":
            raise ConcurrencyError("rd.evt.a.x", 0)
        await asyncio.sleep(0.05)
        self.finished.append(item.msg_id)
        return len(self.finished)


def item(msg_id: str) -> Append:
    return Append(AgentStatusChanged(at=datetime.now(UTC), agent_id="x", status="away"), msg_id=msg_id)


async def test_conflicts_are_returned_in_place() -> None:
    store = SlowStore()
    results = await store.append_many([item("a"), item("conflict"), item("b")])
    assert isinstance(results[1], ConcurrencyError) and results[0] != results[2]


async def test_a_failure_is_raised_after_the_rest_has_finished() -> None:
    store = SlowStore()
    with pytest.raises(TimeoutError):
        await store.append_many([item("broken"), *(item(f"ok{i}") for i in range(5))])
    assert sorted(store.finished) == [f"ok{i}" for i in range(5)]
