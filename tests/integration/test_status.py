"""``relaydesk status`` shows an operator who leads, who is online and what waits where."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nats
import pytest

from events import subjects
from events.store import EventStore
from services.bus.embedded import EmbeddedNats
from tests.integration.dead_letters import cli
from tests.integration.system import eventually, open_conversation, running_system, system_config

pytestmark = pytest.mark.integration


async def test_status_shows_leaders_agents_and_what_waits(
    clean_nats: EmbeddedNats, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = system_config(tmp_path, clean_nats.url)
    async with running_system(config, clean_nats, ("intake", "router", "delivery", "api")):
        nc = await nats.connect(clean_nats.url)
        try:
            store = EventStore(nc, nc.jetstream())
            # Nobody on the demo roster speaks Klingon legal: it waits, and status says where.
            await open_conversation(store, "cu_wait", "cv_wait", skills={"legal": 1}, language="tlh")
        finally:
            await nc.drain()

        async def waiting() -> dict[str, object] | None:
            code, out = await cli(capsys, "status", "--json", "--nats-url", clean_nats.url)
            assert code == 0, out
            report: dict[str, object] = json.loads(out)
            routing = report["routing"]
            leaders = report["leaders"]
            assert isinstance(routing, dict) and isinstance(leaders, dict)
            ready = routing["total_waiting"] == 1 and leaders["router"]["current"]
            return report if ready else None

        report = await eventually(waiting, timeout=30, every=0.5)
        routing = report["routing"]
        assert isinstance(routing, dict)
        # Delivery without endpoints idles and takes no lease: status says nobody leads it.
        assert report["leaders"]["delivery"] == {"holder": None, "current": False}  # type: ignore[index]
        assert routing["agents_online"] == 3  # ava, bruno, chen from the demo roster
        (queue,) = routing["queues"]
        assert queue["channel"] == "sms" and queue["skills"] == {"legal": 1} and queue["waiting"] == 1

        code, out = await cli(capsys, "status", "--nats-url", clean_nats.url)
        assert code == 0
        assert "Leaders" in out and "router" in out and "Waiting: 1" in out
        assert "sms legal>=1 tlh" in out


async def test_status_folds_a_bounded_part_of_the_log(
    clean_nats: EmbeddedNats, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a scale audit: with no router snapshot ``relaydesk status`` folded the whole log
    (62 s and 725 MB over 1.5 million events). It now folds at most ``FOLD_LIMIT`` events after
    the newest snapshot, says so when that is not all of them, and shows no agents and queues
    rather than fold a long log with no snapshot (``--fold-all`` does, with progress)."""
    from events.objects import save_object
    from events.replay import replay_batches
    from events.streams import ensure_streams
    from router import snapshot
    from router.fold import evolve
    from router.state import RouterState
    from services.cli import main as cli_main
    from services.status import routing as status_module

    nc = await nats.connect(clean_nats.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        store = EventStore(nc, js)
        for n in range(12):  # nobody on the roster: twelve wait
            await open_conversation(store, f"cu_w{n}", f"cv_w{n}", skills={"legal": 1}, language="tlh")
        end = await store.last_seq()
        assert end > 30

        limit = 10
        folded: list[int] = []

        def counted(state: RouterState, seq: int, subject: str, event: object) -> RouterState:
            folded.append(seq)
            return evolve(state, seq, subject, event)  # type: ignore[arg-type]

        monkeypatch.setattr(status_module, "FOLD_LIMIT", limit)
        monkeypatch.setattr(status_module, "evolve", counted)
        monkeypatch.setattr("services.progress.PROGRESS_LINE_SECONDS", 0.0)
        monkeypatch.setenv("RELAYDESK_LOG_FORMAT", "json")

        async def run(*argv: str) -> tuple[dict[str, Any], str]:
            folded.clear()
            capsys.readouterr()
            code = await asyncio.to_thread(cli_main, ["status", "--json", "--nats-url", clean_nats.url, *argv])
            out, err = capsys.readouterr()
            assert code == 0, err
            report: dict[str, Any] = json.loads(out)
            return report["routing"], err

        # No snapshot, and a log longer than status folds: no agents and queues, and why; nothing folded.
        routing, _ = await run()
        assert folded == []
        assert (routing["agents"], routing["queues"], routing["complete"], routing["source"]) == (
            None,
            None,
            False,
            "log",
        )
        assert "no snapshot of the routing state" in routing["note"] and "--fold-all" in routing["note"]
        capsys.readouterr()
        assert await asyncio.to_thread(cli_main, ["status", "--nats-url", clean_nats.url]) == 0
        assert "Agents and queues: not shown: no snapshot" in capsys.readouterr().out

        # A router snapshot of the first events: status folds at most `limit` after it, and says
        # how far it got.
        taken = 8
        state = RouterState()
        async for batch in replay_batches(store, end=taken):
            for stored in batch:
                state = evolve(state, stored.seq, stored.subject, stored.event)
        assert await save_object(
            js, subjects.SNAPSHOT_BUCKET, "router", snapshot.dump(state), skip_as="test", seq=state.last_seq
        )
        routing, _ = await run()
        assert len(folded) == limit and min(folded) == taken + 1
        assert routing["folded_to_seq"] == taken + limit and routing["snapshot_seq"] == taken
        assert routing["source"] == "router snapshot" and not routing["complete"]
        assert routing["log_seq"] == end and "behind the log" in routing["note"]

        # --fold-all: every event after the snapshot, with progress lines on stderr (JSON here).
        routing, err = await run("--fold-all")
        assert sorted(folded) == list(range(taken + 1, end + 1))
        assert routing["complete"] and routing["note"] is None and routing["total_waiting"] == 12
        progress = [json.loads(line) for line in err.splitlines() if '"status.progress"' in line]
        assert progress and progress[-1]["total"] == end - taken and progress[-1]["what"] == "status: folding the log"
    finally:
        await nc.drain()
