"""Two processes given one instance id (compose's ``--scale router-a=2``, a shared config's
``[runner] instance_id``) do not both lead: each took the other's lease as its own, so a
standby "renewed" the holder's lease and both acted as leader for up to 0.8 ttl at every
poll. Lease level with a fake clock, then two real ``relaydesk router`` processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.lease import Lease, LeaseValue
from tests.cli_processes import CliProcesses
from tests.integration.routers import CONFIG, STARTING_S
from tests.integration.system import eventually
from tests.integration.test_lease import FakeClock

pytestmark = pytest.mark.integration


async def test_a_namesake_stands_by_while_the_holder_renews_and_says_so(
    nc: NATS, uid: str, log_lines: list[dict[str, Any]]
) -> None:
    kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    clock = FakeClock()
    first = Lease(kv, f"test-{uid}", "router-a", ttl=5, clock=clock)
    second = Lease(kv, f"test-{uid}", "router-a", ttl=5, clock=clock)
    assert await first.try_acquire()
    for _ in range(4):
        assert not await second.try_acquire()
        clock.now += 1.5
        assert await first.renew()
        assert first.held and not second.held
    said = [line for line in log_lines if line["event"] == "lease.name_in_use"]
    assert len(said) == 1 and said[0]["holder"] == "router-a" and "instance id" in said[0]["action"]
    assert second.namesake_running
    # Once the holder stops (killed), its namesake takes over after the lease lapses.
    assert not await second.try_acquire()
    clock.now += 5
    assert await second.try_acquire()
    assert not await first.renew()


async def test_a_previous_run_under_the_same_name_is_taken_over_without_a_word(
    nc: NATS, uid: str, log_lines: list[dict[str, Any]]
) -> None:
    kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    clock = FakeClock()
    killed = Lease(kv, f"test-{uid}", "router-a", ttl=5, clock=clock)
    assert await killed.try_acquire()
    restarted = Lease(kv, f"test-{uid}", "router-a", ttl=5, clock=clock)
    assert not await restarted.try_acquire()  # it may still run: one lease period first
    clock.now += 5
    assert await restarted.try_acquire()
    assert not [line for line in log_lines if line["event"] == "lease.name_in_use"]
    # A lease written by an earlier version under our name (no token) is ours at once, as before.
    name = f"test-old-{uid}"
    await kv.create(name, msgspec.json.encode({"holder": "router-a", "expires": 9e12}))
    assert await Lease(kv, name, "router-a", ttl=5, clock=clock).try_acquire()


class SameNamed(CliProcesses):
    """``relaydesk router`` processes all given the instance id ``router-a``, as compose's
    ``--scale router-a=2`` runs them."""

    NAMES = ("router-0", "router-1")

    def __init__(self, nats_url: str, tmp_path: Path) -> None:
        env = {
            **os.environ,
            "RELAYDESK_NATS_URL": nats_url,
            "RELAYDESK_RUNNER_INSTANCE_ID": "router-a",
            "RELAYDESK_LOG_FORMAT": "json",
        }
        super().__init__(env, tmp_path, stop_wait_s=10)
        self.config = tmp_path / "router.toml"
        self.config.write_text(CONFIG)

    def start_all(self) -> None:
        for name in self.NAMES:
            self.start(name, "router", "--config", str(self.config))

    def said_by_each(self, event: str) -> list[int]:
        return [self.said(name, event) for name in self.NAMES]


@pytest.fixture
def same_named(clean_nats: EmbeddedNats, tmp_path: Path) -> Iterator[SameNamed]:
    routers = SameNamed(clean_nats.url, tmp_path)
    yield routers
    routers.stop_all()


async def test_two_router_processes_given_one_instance_id_never_both_lead(
    clean_nats: EmbeddedNats, same_named: SameNamed
) -> None:
    client = await nats.connect(clean_nats.url)
    await ensure_streams(client.jetstream())
    try:
        same_named.start_all()

        async def both_started_one_leads() -> bool:
            return (
                min(same_named.said_by_each("router.started")) > 0
                and max(same_named.said_by_each("router.leading")) > 0
            )

        assert await eventually(both_started_one_leads, timeout=STARTING_S)
        # Ten renewals more (lease_seconds = 1): the other never took the lease as its own.
        kv = await client.jetstream().key_value(subjects.LEASE_BUCKET)
        tokens: set[str] = set()
        first: int | None = None
        async with asyncio.timeout(60):
            while True:
                entry = await kv.get("router")
                tokens.add(msgspec.json.decode(entry.value or b"", type=LeaseValue).token)
                first = entry.revision if first is None else first
                if (entry.revision or 0) - (first or 0) >= 10:
                    break
                await asyncio.sleep(0.05)
        assert len(tokens) == 1, tokens
        assert same_named.said_by_each("router.leading").count(0) == 1, same_named.said_by_each("router.leading")
        assert same_named.said_by_each("lease.lost") == [0, 0]
        assert sum(same_named.said_by_each("lease.name_in_use")) == 1  # the standby says why, once
    finally:
        await client.close()
