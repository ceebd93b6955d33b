"""Two ``relaydesk projector`` processes on one store (``replicas: 2``, ``--scale projector=2``):
one folds, the other stands by and says so, and takes over when the first is killed. Both
folding each batch was correct but doubled the work, and two rebuilds of a stale store dropped
each other's shadow copy (UndefinedTable, deadlocks) until one outlasted the other's backoff."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import nats
import pytest

from events.store import Append, EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.timelines import is_dsn, open_store
from tests.cli_processes import CliProcesses
from tests.integration.system import eventually
from tests.timelines.helpers import BACKENDS, Script, ensure_database, new_id, pg_dsn

pytestmark = pytest.mark.integration

STARTING_S = 60.0  # a Python start and a catch-up on a loaded 2-core machine


def projector_env(nats_url: str, target: str, tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "RELAYDESK_NATS_URL": nats_url, "RELAYDESK_LOG_FORMAT": "json"}
    if is_dsn(target):
        env["RELAYDESK_PROJECTION_DSN"] = target
    env["RELAYDESK_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store ``relaydesk projector`` opens: the data dir's SQLite file, or a database of its own
    (the command takes no schema: a fresh database keeps the default schema to this test)."""
    if request.param == "sqlite":
        yield str(tmp_path / "data" / "timelines.db")
        return
    import psycopg
    from psycopg import sql

    dbname = new_id("rdclaim_")
    dsn = urlsplit(pg_dsn())._replace(path=f"/{dbname}").geturl()
    if (why := ensure_database(dsn)) is not None:
        pytest.skip(why)
    yield dsn
    maintenance = urlsplit(dsn)._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture
def projectors(clean_nats: EmbeddedNats, target: str, tmp_path: Path) -> Iterator[CliProcesses]:
    group = CliProcesses(projector_env(clean_nats.url, target, tmp_path), tmp_path)
    yield group
    group.stop_all()


async def test_a_second_projector_stands_by_and_takes_over_when_the_first_is_killed(
    clean_nats: EmbeddedNats, target: str, projectors: CliProcesses
) -> None:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    store = EventStore(nc, nc.jetstream())
    timelines = None
    try:
        first = [Script(new_id("cu"), new_id("cv")) for _ in range(5)]
        await store.append_many([Append(e) for s in first for e in (s.opened(), s.message("one"))])
        projectors.start("a", "projector")

        async def a_folded() -> bool:
            return projectors.said("a", "projector.start") == 1

        assert await eventually(a_folded, timeout=STARTING_S)
        projectors.start("b", "projector")

        async def b_stands_by() -> bool:
            return projectors.said("b", "projector.standing_by") == 1

        assert await eventually(b_stands_by, timeout=STARTING_S), projectors.said("b", "projector.start")
        assert projectors.said("b", "projector.start") == 0

        timelines = await open_store(target, readonly=True)

        async def caught_up() -> bool:
            assert timelines is not None
            return await timelines.checkpoint() >= await store.last_seq()

        assert await eventually(caught_up, timeout=STARTING_S)
        projectors.kill("a")  # kill -9: the claim goes with the process (its session, its file lock)
        later = [Script(new_id("cu"), new_id("cv")) for _ in range(5)]
        await store.append_many([Append(e) for s in later for e in (s.opened(), s.message("two"))])
        assert await eventually(caught_up, timeout=STARTING_S)
        assert projectors.said("b", "projector.claim_taken") == 1
        assert projectors.said("b", "projector.start") == 1
        entries = await timelines.timeline(later[-1].customer)
        assert [e.text for e in entries if e.kind == "message_in"] == ["two"]
    finally:
        if timelines is not None:
            await timelines.close()
        await nc.drain()
