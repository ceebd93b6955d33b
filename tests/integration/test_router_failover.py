"""The router as real processes (``relaydesk router``) over a real nats-server: killed with
SIGKILL, restarted, and replaced by a hot standby in the middle of a burst. Whatever
happens, every conversation is routed exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
import pytest

from events import subjects
from events.model import AgentOffered, ConversationAssigned
from events.store import EventStore
from events.streams import ensure_streams
from services.bootstrap import seed_agents
from services.config import load
from services.embedded_nats import EmbeddedNats
from services.lease import LeaseValue
from tests.integration.system import eventually, open_conversation

pytestmark = pytest.mark.integration

AGENTS = "\n".join(
    f'[[agents]]\nid = "agent{i:03d}"\nskills = {{ billing = 3 }}\nlanguages = {{ en = 5 }}\ncapacity = {{ sms = 3 }}\n'
    for i in range(200)
)
CONFIG = f"""
[router]
offer_channels = []

[runner]
lease_seconds = 1.0
tick_seconds = 0.05
snapshot_every = 200

{AGENTS}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "relaydesk.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
async def store(clean_nats: EmbeddedNats, config_file: Path) -> AsyncIterator[EventStore]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    s = EventStore(nc, nc.jetstream())
    await seed_agents(s, load(config_file, env={}))
    yield s
    await nc.drain()


class RouterProcesses:
    def __init__(self, nats_url: str, config_file: Path, log_dir: Path) -> None:
        self.nats_url = nats_url
        self.config_file = config_file
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        env = {
            **os.environ,
            "RELAYDESK_NATS_URL": self.nats_url,
            "RELAYDESK_RUNNER_INSTANCE_ID": name,
            "RELAYDESK_LOG_FORMAT": "json",
        }
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "router", "--config", str(self.config_file)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


@pytest.fixture
def routers(clean_nats: EmbeddedNats, config_file: Path, tmp_path: Path) -> Iterator[RouterProcesses]:
    procs = RouterProcesses(clean_nats.url, config_file, tmp_path)
    yield procs
    procs.stop_all()


async def routed(store: EventStore) -> Counter[str]:
    """How many routing decisions each conversation got."""
    counts: Counter[str] = Counter()
    for stored in await store.read(subjects.CUSTOMER_EVENTS_ALL):
        if isinstance(stored.event, (ConversationAssigned, AgentOffered)):
            counts[stored.event.conversation_id] += 1
    return counts


async def leader(nc_url: str) -> str | None:
    nc = await nats.connect(nc_url)
    try:
        kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
        entry = await kv.get("router")
        return msgspec.json.decode(entry.value, type=LeaseValue).holder if entry.value else None
    except Exception:
        return None
    finally:
        await nc.close()


async def open_many(store: EventStore, prefix: str, count: int) -> None:
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with gate:
            await open_conversation(store, f"{prefix}cu{i}", f"{prefix}cv{i}")

    await asyncio.gather(*(one(i) for i in range(count)))


async def test_killed_router_restarts_and_reassigns_nothing(store: EventStore, routers: RouterProcesses) -> None:
    routers.start("first")
    await open_many(store, "a", 20)
    await eventually(lambda: _all_routed(store, 20), timeout=30)
    before = await routed(store)

    routers.kill("first")  # SIGKILL: no snapshot saved, lease left to lapse
    await open_many(store, "b", 10)  # arrives while no router runs
    routers.start("second")
    await eventually(lambda: _all_routed(store, 30), timeout=30)
    await asyncio.sleep(1.0)  # several ticks in which a confused router could re-decide

    after = await routed(store)
    assert all(count == 1 for count in after.values()), after
    assert {cid: n for cid, n in after.items() if cid in before} == before


async def test_standby_takes_over_during_a_burst_and_routes_each_once(
    clean_nats: EmbeddedNats, store: EventStore, routers: RouterProcesses
) -> None:
    routers.start("alpha")
    routers.start("beta")
    first = await eventually(lambda: leader(clean_nats.url), timeout=20)
    burst = asyncio.create_task(open_many(store, "c", 500))
    await eventually(lambda: _routed_at_least(store, 20), timeout=60)
    routers.kill(first)  # the active router dies mid-burst
    await burst
    await eventually(lambda: _leader_other_than(clean_nats.url, first), timeout=20)
    await eventually(lambda: _all_routed(store, 500), timeout=90, every=0.5)
    counts = await routed(store)
    assert len(counts) == 500
    assert set(counts.values()) == {1}


async def _all_routed(store: EventStore, n: int) -> bool:
    counts = await routed(store)
    return len(counts) >= n


async def _routed_at_least(store: EventStore, n: int) -> bool:
    return len(await routed(store)) >= n


async def _leader_other_than(url: str, name: str) -> bool:
    current = await leader(url)
    return current is not None and current != name
