"""A snapshot that folded more of the log than the log holds is of another log (the snapshot
bucket restored from a newer backup than the log): it is ignored and the log folded whole,
instead of every event up to its sequence being skipped."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.model import AgentStatusChanged
from events.store import Append, EventStore
from router import snapshot
from router.state import RouterState
from services.api import view_snapshot
from services.state_snapshots import read_state
from tests.timelines.helpers import T0

pytestmark = pytest.mark.integration


async def put(nc: NATS, name: str, data: bytes) -> None:
    obs = await nc.jetstream().object_store(subjects.SNAPSHOT_BUCKET)
    await obs.put(name, data)


async def test_router_and_delivery_snapshots_past_the_end_of_the_log_are_not_used(clean_nc: NATS) -> None:
    js = clean_nc.jetstream()
    end = await EventStore(clean_nc, js).append(Append(AgentStatusChanged(at=T0, agent_id="ava", status="available")))
    await put(clean_nc, "router", snapshot.dump(RouterState(last_seq=end)))
    assert (await read_state(js, "router", reader="test")) == RouterState(last_seq=end)
    await put(clean_nc, "router", snapshot.dump(RouterState(last_seq=end + 500)))
    assert await read_state(js, "router", reader="test") is None


async def test_an_api_view_snapshot_past_the_end_of_the_log_is_not_used(clean_nc: NATS) -> None:
    js = clean_nc.jetstream()
    end = await EventStore(clean_nc, js).append(Append(AgentStatusChanged(at=T0, agent_id="ava", status="available")))

    def snap(position: int) -> bytes:
        return view_snapshot.dump(
            view_snapshot.ViewSnapshot(
                format=view_snapshot.FORMAT, router_format=snapshot.FORMAT, position=position, state=RouterState()
            )
        )

    await put(clean_nc, view_snapshot.SNAPSHOT_NAME, snap(end))
    found = await view_snapshot.read(js)
    assert found is not None and found.position == end
    await put(clean_nc, view_snapshot.SNAPSHOT_NAME, snap(end + 500))
    assert await view_snapshot.read(js) is None
