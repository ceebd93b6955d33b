"""``relaydesk bench restart``: how long the router, the API and the delivery service take to
start on a long log, with and without a snapshot, beside the ordered replay of the same log.

Writes N events (agents, then conversations opened, routed, offered, accepted, some resolved)
to a nats-server of its own, then runs each stage in a process of its own (peak RSS is that
process's), taking turns:

- ceiling: an ordered consumer over ``rd.evt.>``, every event decoded and dropped;
- router cold / router snapshot: what the router does before it may decide: load its snapshot
  (``rd_snapshots/router``; none for "cold") and fold the log after it (``router.fold``). The
  cold stage saves the snapshot the next one starts from;
- api cold / api snapshot: the API's view (``services.api.readmodel.LiveState``) from nothing,
  or from its snapshot (``rd_snapshots/api``), until it has caught up with the log;
- delivery cold / delivery snapshot: the delivery service (``services.delivery.service``, one
  webhook endpoint; the log's facts are too old to notify) from nothing, or from its snapshot
  (``rd_snapshots/delivery``), until it has folded the whole log. The cold stage saves the
  snapshot the next one starts from once it has caught up.

Each time is printed beside the ceiling's, and as a share of it (the noise-proof figure on a
shared machine). A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.bench import progress
from services.bench.args import described, output_file, positive

TARGET_S = 5.0
STAGES = ("ceiling", "router-cold", "router-snapshot", "api-cold", "api-snapshot", "delivery-cold", "delivery-snapshot")


def log_events(total: int) -> Any:
    """``total`` events or a few more: 200 agents, then conversations of 4-5 events."""
    from events.model import (
        AgentOffered,
        AgentProfile,
        AgentProfileUpdated,
        AgentStatusChanged,
        ConversationOpened,
        ConversationResolved,
        DecisionReason,
        OfferAccepted,
        Requirements,
        RoutingRequested,
    )

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    agents = 200
    for i in range(agents):
        profile = AgentProfile(name=f"a{i}", skills={"billing": 3}, languages={"en": 5}, capacity={"sms": 1_000_000})
        yield AgentProfileUpdated(at=t0, agent_id=f"a{i}", profile=profile)
        yield AgentStatusChanged(at=t0, agent_id=f"a{i}", status="available")
    written, i = 2 * agents, 0
    reason = DecisionReason(rule="bench")
    while written < total:
        cid, cust, aid = f"cv{i}", f"cu{i}", f"a{i % agents}"
        at = t0 + timedelta(milliseconds=i)
        batch = [
            ConversationOpened(at=at, customer_id=cust, conversation_id=cid, channel="sms", contact="+15550000000"),
            RoutingRequested(at=at, customer_id=cust, conversation_id=cid, channel="sms", requirements=Requirements()),
            AgentOffered(
                at=at,
                customer_id=cust,
                conversation_id=cid,
                agent_id=aid,
                expires_at=at + timedelta(days=365),
                reason=reason,
            ),
            OfferAccepted(at=at, customer_id=cust, conversation_id=cid, agent_id=aid),
        ]
        if i % 10 != 0:  # one in ten stays open
            batch.append(ConversationResolved(at=at, customer_id=cust, conversation_id=cid, agent_id=aid))
        yield from batch
        written += len(batch)
        i += 1


async def write_log(url: str, total: int) -> tuple[int, float]:
    import nats

    from events.store import Append, EventStore
    from events.streams import ensure_streams

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        store = EventStore(nc, js, timeout=30.0)
        started = time.perf_counter()
        chunk: list[Append] = []
        for event in log_events(total):
            chunk.append(Append(event))
            if len(chunk) >= 20_000:
                await store.append_many(chunk, in_flight=2_000)
                chunk = []
                written = await store.last_seq()
                progress.show(f"writing the log: {written:,}", milestone=written % 100_000 < 20_000)
        if chunk:
            await store.append_many(chunk, in_flight=2_000)
        progress.done()
        return await store.last_seq(), time.perf_counter() - started
    finally:
        await nc.drain()


async def run_stage(stage: str, url: str) -> dict[str, Any]:
    import nats

    from events import subjects
    from events.store import EventStore

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        store = EventStore(nc, js, timeout=30.0, reader="bench")
        started = time.perf_counter()
        events = 0
        if stage == "ceiling":
            async for batch in store.replay(subjects.EVENTS_ALL, 1):
                events += len(batch)
        elif stage.startswith("router"):
            from router import snapshot
            from router.fold import evolve
            from router.state import RouterState
            from services.router_runner import SNAPSHOT_NAME

            obs = await js.object_store(subjects.SNAPSHOT_BUCKET)
            state = RouterState()
            if stage == "router-snapshot":
                state = snapshot.load((await obs.get(SNAPSHOT_NAME)).data or b"")
            async for batch in store.replay(subjects.EVENTS_ALL, state.last_seq + 1):
                for stored in batch:
                    state = evolve(state, stored.seq, stored.subject, stored.event)
                events += len(batch)
            took = time.perf_counter() - started
            if stage == "router-cold":
                await obs.put(SNAPSHOT_NAME, snapshot.dump(state))
            started = time.perf_counter() - took
        elif stage.startswith("delivery"):
            events, took = await delivery_start(store, save=stage == "delivery-cold")
            started = time.perf_counter() - took
        else:
            from services.api.readmodel import LiveState

            live = LiveState(store, use_snapshot=stage == "api-snapshot")
            await live.start()
            events = live.reader.read
            took = time.perf_counter() - started
            if stage == "api-cold":
                await live.save_snapshot()
            await live.stop()
            started = time.perf_counter() - took
        work = time.perf_counter() - started
    finally:
        await nc.drain()
    return {"events": events, "work_s": work, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


async def delivery_start(store: Any, *, save: bool) -> tuple[int, float]:
    """(events folded, seconds) until the delivery service has folded the whole log: from its
    snapshot if there is one. ``save``: then save a snapshot at the end of the log."""
    from services.delivery.service import DeliveryService
    from services.delivery.settings import DeliverySettings, Endpoint

    end = await store.last_seq()
    hook = Endpoint(kind="webhook", id="bench", agent="*", url="http://127.0.0.1:9/", secret="bench")
    service = DeliveryService(
        store, DeliverySettings(endpoints=(hook,)), console_url="http://console", api_url="http://api"
    )
    stop = asyncio.Event()
    began = time.perf_counter()
    running = asyncio.create_task(service.run(stop))
    try:
        while service.facts.state.last_seq < end:
            if running.done():
                running.result()  # its failure, said
                raise RuntimeError("the delivery service stopped before it caught up")
            await asyncio.sleep(0.005)
        took = time.perf_counter() - began
        if save:
            while service.checkpoint < end:  # the snapshot stands at the checkpoint
                await asyncio.sleep(0.01)
            service.snapshots.save_soon()
            await service.snapshots.finish()
    finally:
        stop.set()
        await running
    return end - service.snapshots.started_from, took


def child(stage: str, url: str) -> dict[str, Any]:
    args = [sys.executable, "-m", "services.bench.restart", "--stage", stage, "--nats-url", url]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        return {"stage": stage, "skipped": f"failed: {said[-1] if said else done.returncode}"}
    return {"stage": stage, **json.loads(done.stdout.strip().splitlines()[-1])}


def bench(events: int) -> dict[str, Any]:
    from services.bus.embedded import EmbeddedNats

    about: dict[str, Any] = {"events_requested": events, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(store_dir=Path(tmp) / "js")
        server.start()
        try:
            written, seconds = asyncio.run(write_log(server.url, events))
            about.update(events=written, write_s=round(seconds, 1))
            stages = [child(stage, server.url) for stage in STAGES]
        finally:
            server.stop()
    return report(stages, about)


def report(stages: list[dict[str, Any]], about: dict[str, Any]) -> dict[str, Any]:
    ceiling = next((s["work_s"] for s in stages if s["stage"] == "ceiling" and "work_s" in s), 0.0)
    print(f"log: {about['events']:,} events; ordered replay (ceiling): {ceiling:.2f} s")
    print(f"{'stage':<17}{'events read':>12}{'seconds':>9}{'x ceiling':>11}{'peak RSS MB':>13}  target")
    for s in stages:
        if "skipped" in s:
            print(f"{s['stage']:<17}  {s['skipped']}")
            continue
        share = s["work_s"] / ceiling if ceiling else 0.0
        s["times_ceiling"] = round(share, 2)
        verdict = ""
        if s["stage"].endswith("snapshot"):
            verdict = f"{'met' if s['work_s'] < TARGET_S else 'NOT met'} (< {TARGET_S:.0f} s)"
        figures = f"{s['events']:>12,}{s['work_s']:>9.2f}{share:>11.2f}{s['peak_rss_mb']:>13.0f}"
        print(f"{s['stage']:<17}{figures}  {verdict}")
    return {"about": about, "ceiling_s": round(ceiling, 3), "stages": stages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relaydesk bench restart", description=described(__doc__))
    parser.add_argument("--events", type=positive, default=1_000_000, help="events in the log (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="50,000 events")
    parser.add_argument("--json", metavar="FILE", type=output_file, help="write the figures as JSON")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from services import logs

    logs.configure("warning")
    if args.stage:
        print(json.dumps(asyncio.run(run_stage(args.stage, args.nats_url))))
        return 0
    out = bench(50_000 if args.quick else args.events)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
