"""A projector that stops making progress while a few events wait is not ready once its position
has not moved for ``[projection] stale_seconds``, and ``relaydesk_projector_stalled_seconds``
says for how long (found by the observability audit: its lag is counted in events, so at low
traffic a stalled projector showed a small, steady lag and stayed ready)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from prometheus_client import REGISTRY

from events.store import EventStore
from services.bus.embedded import EmbeddedNats, free_port
from services.health.checks import projector_check
from services.projector import Projector
from tests.integration.system import eventually, open_conversation, running_system, system_config

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stalled(key: str) -> float | None:
    return REGISTRY.get_sample_value("relaydesk_projector_stalled_seconds", {"projector": key})


async def test_not_ready_once_behind_without_moving_for_stale_seconds(store: EventStore, uid: str) -> None:
    customer = f"cu{uid}"
    await open_conversation(store, customer, f"cv{uid}")  # two events on the customer's subjects
    end = await store.last_subject_seq(f"rd.evt.c.{customer}.>")
    clock, key, at, rebuilding = Clock(), f"stall-{uid}", [end - 2], [False]
    check = projector_check(
        store,
        lambda: at[0],
        key,
        f"rd.evt.c.{customer}.>",
        stale_after=120,
        rebuilding=lambda: rebuilding[0],
        clock=clock,
    )

    result = await check()
    assert result.ok and result.detail["lag_events"] == 2 and result.detail["stalled_seconds"] == 0
    clock.now += 119
    result = await check()
    assert result.ok and result.detail["stalled_seconds"] == 119 and _stalled(key) == 119
    clock.now += 1
    result = await check()
    assert not result.ok
    assert "not moved for 120 s while 2 events wait" in result.detail["reason"]
    assert "stale_seconds" in result.detail["reason"]
    assert _stalled(key) == 120

    # It moves (still behind): ready, counted from now.
    at[0] = end - 1
    result = await check()
    assert result.ok and result.detail["stalled_seconds"] == 0 and _stalled(key) == 0
    # A rebuild of the store keeps the position where it was: no stall while it runs.
    rebuilding[0] = True
    clock.now += 600
    result = await check()
    assert result.ok and result.detail["rebuilding"] is True and _stalled(key) == 0
    rebuilding[0] = False
    # Caught up: nothing waits, however long the position stays.
    at[0] = end
    clock.now += 600
    result = await check()
    assert result.ok and result.detail["lag_events"] == 0 and result.detail["stalled_seconds"] == 0


@contextlib.asynccontextmanager
async def projector_behind_a_conversation(
    clean_nats: EmbeddedNats, tmp_path: Path, stale_seconds: float
) -> AsyncIterator[tuple[Any, str]]:
    """The projector as `relaydesk projector` runs it (config -> check), with one conversation
    on the log for it to fold: yields the running system and its /readyz URL."""
    config = system_config(tmp_path, clean_nats.url)
    config.health = msgspec.structs.replace(config.health, port=free_port())
    config.projection = msgspec.structs.replace(config.projection, stale_seconds=stale_seconds)
    async with running_system(config, clean_nats, services=("projector",)) as system:
        nc = await nats.connect(clean_nats.url)
        try:
            tag = uuid.uuid4().hex[:10]
            await open_conversation(EventStore(nc, nc.jetstream()), f"cu{tag}", f"cv{tag}")
            yield system, f"http://127.0.0.1:{config.health.port}/readyz"
        finally:
            await nc.drain()


async def test_a_stuck_projector_says_so_on_its_readyz(
    clean_nats: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its store stops answering.
    release = asyncio.Event()
    original = Projector._apply

    async def stuck_apply(self: Projector, chunk: Any, *, through: int | None = None) -> None:
        if chunk:
            await release.wait()
        await original(self, chunk, through=through)

    monkeypatch.setattr(Projector, "_apply", stuck_apply)
    async with projector_behind_a_conversation(clean_nats, tmp_path, stale_seconds=1.0) as (system, health):
        try:

            async def not_ready() -> Any:
                async with system.http.get(health) as resp:
                    body = await resp.json()
                return body if resp.status == 503 and "projector" in body.get("failing", []) else None

            body = await eventually(not_ready, timeout=30, every=0.2)
            projector = body["checks"]["projector"]
            assert projector["lag_events"] > 0 and projector["stalled_seconds"] >= 1
            assert "not moved for" in projector["reason"]
        finally:
            release.set()

        async def ready_again() -> Any:
            async with system.http.get(health) as resp:
                return resp.status == 200

        await eventually(ready_again, timeout=30, every=0.2)


async def test_a_projector_retrying_says_why_on_its_readyz_at_once(
    clean_nats: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its store refusing (a lock held, a disk full): /readyz named nothing until stale_seconds
    had passed, and then only 'see its log'; now the detail says why it retries while it does,
    and nothing once the store answers again. A short outage leaves it ready."""
    from services.timelines import StoreUnavailable

    release = asyncio.Event()
    original = Projector._apply

    async def refused_apply(self: Projector, chunk: Any, *, through: int | None = None) -> None:
        if chunk and not release.is_set():
            raise StoreUnavailable("lock held by pid 4242 (postgres, psql) for 95 s")
        await original(self, chunk, through=through)

    monkeypatch.setattr(Projector, "_apply", refused_apply)
    async with projector_behind_a_conversation(clean_nats, tmp_path, stale_seconds=600.0) as (system, health):

        async def projector_detail() -> Any:
            async with system.http.get(health) as resp:
                body = await resp.json()
            return resp.status, body["checks"]["projector"]

        async def retrying() -> Any:
            status, detail = await projector_detail()
            return (status, detail) if "retrying" in detail else None

        try:
            status, detail = await eventually(retrying, timeout=30, every=0.2)
            assert status == 200  # not stale yet
            assert detail["retrying"] == "StoreUnavailable: lock held by pid 4242 (postgres, psql) for 95 s"
        finally:
            release.set()

        async def answered_again() -> Any:
            status, detail = await projector_detail()
            return status == 200 and "retrying" not in detail and detail["lag_events"] == 0

        await eventually(answered_again, timeout=30, every=0.2)
