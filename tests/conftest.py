from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from hypothesis import settings
from nats.aio.client import Client as NATS

from events.store import EventStore
from events.streams import ensure_streams
from services import logs
from services.bus.embedded import PORT_SLICE_ENV, EmbeddedNats
from tests.natsserver import nats_server

logs.configure(level="warning", fmt="console")

# Every service process listens on [health] port (9090) and a single service fails at start when
# it is taken: the services tests start as subprocesses (two routers, several intakes, other
# people's test runs on this machine) inherit "off" here. Tests of the health listener set a port.
os.environ.setdefault("RELAYDESK_HEALTH_PORT", "0")
# Each pytest-xdist worker picks ports from its own slice (services.bus.embedded.free_port),
# and so do the processes its tests start (they inherit it).
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):
    os.environ[PORT_SLICE_ENV] = (
        f"{int(os.environ['PYTEST_XDIST_WORKER'][2:])}/{int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))}"
    )

# Property tests explore new random histories on every developer run (where a failure is a
# find to keep as a regression test), and replay a fixed set in CI, so that a change lands
# or not on its own merits, not on the luck of the draw.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    with nats_server() as (url, _server):
        yield url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    await ensure_streams(js)
    try:
        yield client
    finally:
        await client.drain()


@pytest.fixture
def store(nc: NATS) -> EventStore:
    return EventStore(nc, nc.jetstream())


@pytest.fixture
def uid() -> str:
    """A unique token so tests sharing one server never see each other's subjects."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def clean_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A nats-server of this test's own, for system tests that fold the whole log and so
    must not see other tests' agents and conversations."""
    server = EmbeddedNats(store_dir=tmp_path_factory.mktemp("nats") / "js")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def own_store(clean_nc: NATS) -> EventStore:
    """An event store on this test's own nats-server (``clean_nats``), its streams made."""
    return EventStore(clean_nc, clean_nc.jetstream())


@pytest.fixture
async def clean_nc(clean_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    """A connection to this test's own nats-server (``clean_nats``), its streams made."""
    client = await nats.connect(clean_nats.url)
    await ensure_streams(client.jetstream())
    try:
        yield client
    finally:
        await client.drain()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """A headless Chromium (skips when there is none; see tests/browser.py)."""
    from tests.browser import headless_chromium

    async with headless_chromium(tmp_path / "chromium") as driver:
        yield driver


@pytest.fixture(scope="session", autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    """At the end of the session, a task some test left running is named with where it
    stands: cancelled, it must end (one that swallows its cancellation would hang the
    session's loop on close, with nothing said)."""
    import asyncio
    import sys

    yield
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in left:
        task.cancel()
    if not left:
        return
    _, stuck = await asyncio.wait(left, timeout=10)
    for task in stuck:
        print(f"\nA task ignored its cancellation for 10 s: {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    assert not stuck, f"{len(stuck)} task(s) left running by the tests ignore cancellation (stacks above)"


# A test that waits on a task that never ends (a swallowed cancel, a lost message) shows no
# Python stack worth reading: the main thread sits in select(). Past this many seconds the
# event loop prints every pending task's stack, before pytest-timeout fails the test.
TASK_DUMP_AFTER = 300.0


def _dump_tasks(nodeid: str) -> None:
    print(f"\n--- {nodeid} still running after {TASK_DUMP_AFTER:.0f}s; pending asyncio tasks:", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=sys.stderr)


@pytest.fixture(autouse=True)
async def _task_dump_when_hung(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    handle = asyncio.get_running_loop().call_later(TASK_DUMP_AFTER, _dump_tasks, request.node.nodeid)
    try:
        yield
    finally:
        handle.cancel()


def _reconnecting_after_close() -> list[asyncio.Task[Any]]:
    """The NATS clients' reconnect loops still running after their client was closed."""
    lost = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if getattr(coro, "__qualname__", "") != "Client._attempt_reconnect":
            continue
        frame = getattr(coro, "cr_frame", None)
        client = frame.f_locals.get("self") if frame is not None else None
        if task.cancelling() or (client is not None and client.is_closed):
            lost.append(task)
    return lost


@pytest.fixture(autouse=True)
async def _no_reconnecting_after_close() -> AsyncIterator[None]:
    """nats-py's ``close()`` cancels the client's reconnect loop, and on Python 3.11 that
    cancellation is lost when it lands as a connect attempt fails (``asyncio.wait_for`` returns
    the attempt's error instead): the closed client goes on trying its stopped server for the
    rest of the session, logging "nats: encountered error" with a traceback every
    ``reconnect_time_wait``, into whatever test runs next on that worker (a CI failure: a test
    that asserts its own log has no traceback). After each test such a loop is cancelled until
    it ends."""
    yield
    for _ in range(50):
        lost = _reconnecting_after_close()
        if not lost:
            return
        for task in lost:
            task.cancel()
        await asyncio.wait(lost, timeout=0.5)


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every log line the test causes, debug included, as structlog event dicts."""
    import logging

    import structlog

    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)
