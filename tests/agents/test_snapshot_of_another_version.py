"""A snapshot written by another version (an upgrade that changed a format, or a downgrade) is
ignored and the log folded whole, and only said: it is not counted with the quarantined log
messages, as a damaged one is (an operator audit: every upgrade raised
``relaydesk_quarantined_total{reader="api"}``, and a format whose state layout changed was
reported as "not a router snapshot" and counted as damage)."""

from __future__ import annotations

import msgspec
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from events import subjects
from events.model import AgentStatusChanged
from events.store import Append, EventStore
from router import snapshot
from router.state import RouterState
from services.api import view_snapshot
from services.state_snapshots import read_state
from tests.timelines.helpers import T0


def quarantined(reader: str) -> float:
    labels = {"reader": reader, "stream": subjects.SNAPSHOT_BUCKET}
    return REGISTRY.get_sample_value("relaydesk_quarantined_total", labels) or 0.0


def older_router_snapshot() -> bytes:
    """A router snapshot of the previous format whose state another layout cannot decode."""
    return msgspec.msgpack.encode({"format": snapshot.FORMAT - 1, "state": {"conversations": ["laid out otherwise"]}})


def test_a_router_snapshot_of_another_format_is_incompatible_even_when_its_state_does_not_decode() -> None:
    with pytest.raises(snapshot.IncompatibleSnapshot, match=f"format {snapshot.FORMAT - 1}") as raised:
        snapshot.load(older_router_snapshot())
    assert not isinstance(raised.value, snapshot.UnreadableSnapshot)
    with pytest.raises(snapshot.UnreadableSnapshot):
        snapshot.load(b"\x93not a snapshot")
    assert snapshot.load(snapshot.dump(RouterState(last_seq=7))) == RouterState(last_seq=7)


def api_snapshot(*, router_format: int) -> bytes:
    return view_snapshot.dump(
        view_snapshot.ViewSnapshot(
            format=view_snapshot.FORMAT, router_format=router_format, position=1, state=RouterState()
        )
    )


@pytest.mark.integration
async def test_snapshots_of_another_version_are_ignored_but_not_counted_as_quarantined(clean_nc: NATS) -> None:
    js = clean_nc.jetstream()
    await EventStore(clean_nc, js).append(Append(AgentStatusChanged(at=T0, agent_id="ava", status="available")))
    obs = await js.object_store(subjects.SNAPSHOT_BUCKET)

    await obs.put(view_snapshot.SNAPSHOT_NAME, api_snapshot(router_format=snapshot.FORMAT - 1))
    before = quarantined("api")
    assert await view_snapshot.read(js) is None
    assert quarantined("api") == before

    await obs.put("router", older_router_snapshot())
    before = quarantined("router")
    assert await read_state(js, "router", reader="router") is None
    assert quarantined("router") == before

    # A damaged one still counts; one of this version is used.
    damaged_before = quarantined("api")
    await obs.put(view_snapshot.SNAPSHOT_NAME, b"\x93damaged")
    assert await view_snapshot.read(js) is None
    assert quarantined("api") == damaged_before + 1
    await obs.put(view_snapshot.SNAPSHOT_NAME, api_snapshot(router_format=snapshot.FORMAT))
    assert (found := await view_snapshot.read(js)) is not None and found.position == 1
