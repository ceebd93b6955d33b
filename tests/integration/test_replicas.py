"""Issue 11 on a real 3-node JetStream cluster: with ``[nats] replicas = 3`` every stream, KV
bucket and object store Relaydesk creates (the lazily created ones included) has 3 replicas,
so losing one node loses no store; set-up waits out a cluster that has no leader yet; drift
from the wanted config is fixed where NATS can, and named where it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from connectors.chat.history import ChatHistory
from events import subjects
from events.streams import (
    DriftRefused,
    SetupFailed,
    StreamSettings,
    ensure_streams,
    stores,
    stream_drift,
)
from services.bootstrap import connect
from services.bus.embedded import free_port
from services.delivery.settings import Endpoint
from services.status import status
from services.up import Started, serve_all, with_built_in_connectors
from tests.integration.system import API_TOKEN, eventually, system_config
from tests.natscluster import NatsCluster, nats_cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

DAY = 24 * 3600.0


async def replicas_of_every_stream(nc: NATS) -> dict[str, int]:
    """Every stream on the cluster (KV_* and OBJ_* included), by the JetStream API."""
    return {info.config.name or "": int(info.config.num_replicas or 1) for info in await nc.jetstream().streams_info()}


@pytest.fixture
async def client(nats_cluster: NatsCluster) -> AsyncIterator[NATS]:  # noqa: F811
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        yield nc
    finally:
        await nc.close()


async def test_relaydesk_start_up_on_a_cluster_creates_every_store_with_three_replicas(
    tmp_path: Path,
    nats_cluster: NatsCluster,  # noqa: F811
    client: NATS,
) -> None:
    url = nats_cluster.urls[0]
    config = with_built_in_connectors(system_config(tmp_path, url), tmp_path / "data")
    config.nats.replicas = 3
    for name in ("email", "social", "chat"):
        config.connectors[name]["port"] = free_port()
    config.connectors["email"]["smtp_port"] = free_port()
    # An endpoint, so that the delivery service runs (and creates its records bucket).
    hook = Endpoint(kind="webhook", agent="*", url=f"http://127.0.0.1:{free_port()}/hook", secret="s" * 32)
    config.delivery = msgspec.structs.replace(config.delivery, endpoints=(hook,))
    stop = asyncio.Event()
    started: list[Started] = []
    task = asyncio.create_task(serve_all(config, url, API_TOKEN, stop, started.append))
    wanted = {spec.name for spec in stores(StreamSettings(replicas=3))}
    try:

        async def all_there() -> dict[str, int] | None:
            if task.done():
                raise AssertionError(f"relaydesk stopped early: {task.result()!r}")
            try:
                seen = await replicas_of_every_stream(client)
            except nats.errors.TimeoutError:
                return None  # a busy cluster (nine services starting): ask again
            return seen if started and wanted <= set(seen) else None

        seen = await eventually(all_there, timeout=90)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    # Every store, not only the registry's: a store someone adds without replicas shows here.
    assert {name: n for name, n in seen.items() if n != 3} == {}, seen
    assert {"RD_CHAT", "KV_rd_deliveries", "OBJ_rd_attachments", "KV_rd_idempotency", "RD_KEYS"} <= set(seen)
    # What the services created lazily matches the registry (no drift for `relaydesk status`).
    assert await stream_drift(client.jetstream(), StreamSettings(replicas=3)) == []


async def test_the_chat_history_keeps_answering_when_the_node_leading_it_dies(
    nats_cluster: NatsCluster,  # noqa: F811
) -> None:
    nc = await nats.connect(servers=nats_cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        history = ChatHistory(replicas=3, js=nc.jetstream())
        await history.ensure()
        first, _ = await history.append("visitor:a", "message", "m1", "hello")
        info = await nc.jetstream().stream_info("RD_CHAT")
        assert info.config.num_replicas == 3
        leader = info.cluster.leader if info.cluster else None
        assert leader is not None
        nats_cluster.kill(next(i for i, n in enumerate(nats_cluster.nodes) if n.name == leader))

        async def appended() -> int | None:
            try:
                frame, _ = await history.append("visitor:a", "message", "m2", "still there?")
            except Exception:
                return None  # a new leader is being elected (the client may be reconnecting too)
            return frame.seq

        await eventually(appended, timeout=60, every=0.5)
        frames = await history.read("visitor:a", 0)
        assert [f.key for f in frames] == ["m1", "m2"] and frames[0].seq == first.seq
    finally:
        await nc.close()


async def test_set_up_waits_for_a_cluster_that_has_no_leader_yet(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster")
    try:
        cluster.start_node(0)  # alone: no JetStream meta leader until a peer joins
        nc = await nats.connect(servers=cluster.urls[:1], max_reconnect_attempts=-1)
        try:
            js = nc.jetstream()
            settings = StreamSettings(replicas=3)
            with pytest.raises(SetupFailed, match="stream set-up: NATS did not answer within 1 s"):
                await ensure_streams(js, settings, budget=1.0)

            waited: list[BaseException] = []

            def note(err: BaseException) -> str:
                waited.append(err)
                return ""  # keep waiting

            setup = asyncio.create_task(ensure_streams(js, settings, give_up=note))
            chat = asyncio.create_task(ChatHistory(replicas=3, js=js).ensure())
            await eventually(lambda: asyncio.sleep(0, result=bool(waited)), timeout=30)
            assert not setup.done() and not chat.done()
            await asyncio.to_thread(cluster.start_node, 1)
            await asyncio.to_thread(cluster.start_node, 2)
            assert await asyncio.wait_for(setup, 90) == []
            await asyncio.wait_for(chat, 90)
            seen = await replicas_of_every_stream(nc)
            assert {name: n for name, n in seen.items() if n != 3} == {}, seen
            assert {"RD_EVENTS", "RD_CHAT", "KV_rd_leases"} <= set(seen)
        finally:
            await nc.close()
    finally:
        cluster.stop()


async def test_drift_is_updated_in_place_and_reported(
    tmp_path: Path,
    client: NATS,
    nats_cluster: NatsCluster,  # noqa: F811
) -> None:
    js = client.jetstream()
    # An inbound stream from an older or hand-made set-up: one replica, kept one day only.
    await js.add_stream(
        StreamConfig(
            name=subjects.INBOUND_STREAM,
            subjects=[subjects.INBOUND_ALL],
            storage=StorageType.FILE,
            num_replicas=1,
            max_age=DAY,
            duplicate_window=600.0,
            allow_direct=True,
        )
    )
    settings = StreamSettings(replicas=3)
    found = {(d.stream, d.field): (d.old, d.new) for d in await stream_drift(js, settings)}
    assert found[(subjects.INBOUND_STREAM, "num_replicas")] == (1, 3)
    assert found[(subjects.INBOUND_STREAM, "max_age")] == (DAY, 14 * DAY)

    drift = await ensure_streams(js, settings)
    assert {(d.stream, d.field, d.status) for d in drift} >= {
        (subjects.INBOUND_STREAM, "num_replicas", "updated"),
        (subjects.INBOUND_STREAM, "max_age", "updated"),
        (subjects.INBOUND_STREAM, "duplicate_window", "updated"),
    }
    info = await js.stream_info(subjects.INBOUND_STREAM)
    assert (info.config.num_replicas, info.config.max_age) == (3, 14 * DAY)
    assert await stream_drift(js, settings) == []

    # A field NATS cannot change in place: the work queue made as a plain (limits) stream.
    await js.delete_stream(subjects.OUTBOUND_STREAM)
    await js.add_stream(
        StreamConfig(
            name=subjects.OUTBOUND_STREAM, subjects=[subjects.OUTBOUND_ALL], num_replicas=1, duplicate_window=DAY
        )
    )
    with pytest.raises(DriftRefused) as refused:
        await ensure_streams(js, settings)
    assert [(d.stream, d.field) for d in refused.value.refused] == [(subjects.OUTBOUND_STREAM, "retention")]
    assert "RD_OUTBOUND: retention is 'limits', wanted 'workqueue'" in str(refused.value)
    assert "can not change retention" in str(refused.value)
    info = await js.stream_info(subjects.OUTBOUND_STREAM)
    assert info.config.num_replicas == 3  # what could change did
    assert info.config.retention == RetentionPolicy.LIMITS

    # A service that may not manage streams starts and names the drift; the tool (`relaydesk
    # setup` and `up` connect as it) stops with the reason.
    left = await ensure_streams(js, settings, create=False)
    assert [(d.stream, d.field, d.status) for d in left] == [(subjects.OUTBOUND_STREAM, "retention", "differs")]
    config = system_config(tmp_path, nats_cluster.urls[0])
    config.nats.replicas = 3
    report = await status(client, config)  # what `relaydesk status` shows
    assert [(d["stream"], d["field"], d["old"], d["new"]) for d in report["drift"]] == [
        (subjects.OUTBOUND_STREAM, "retention", "limits", "workqueue")
    ]
    with pytest.raises(SystemExit, match=r"RD_OUTBOUND: retention .*NATS refused the update"):
        async with connect(config, name="relaydesk-setup", role="tool"):
            pass
