"""``relaydesk bench route``: inbound messages on ``rd.inbound.sms`` to an offer on the log.

One run, one throw-away nats-server (``EmbeddedNats`` in a temporary directory):

1. **ceiling**: a bare nats-py loop on the same server that fetches from a pull consumer
   (batches of 256) and appends one event per message with an expected subject sequence,
   pipelined, then acks: messages/s over ``--messages`` pre-published messages;
2. **the pipeline**: a ``relaydesk router`` process (``--agents`` agents, 500 by default,
   seeded on the log with room for every conversation of the run, offers held for the whole
   run: nobody accepts) and 1, then 3,
   ``relaydesk intake`` processes. Messages are published as a connector publishes them
   (``InboundMessage``, ``Nats-Msg-Id``), each from a new customer asking for billing, and
   each must end in an ``AgentOffered`` on the log (watched with a core subscription).
   Per intake count: conversations/s at saturation (a burst of ``--messages``; first publish
   to last offer) and p50/p99 from the *scheduled* publish time to the offer at fixed offered
   rates (100, 500, 1,000/s for ``--seconds`` each; scheduled, so a stall is not hidden).

Prints a table with each figure beside the ceiling of the same run, and writes ``--json``.
Targets: saturation ≥ 0.5 of the ceiling; p99 < 50 ms at 500/s. A benchmark: asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from events import subjects
from events.codec import encode
from events.model import InboundMessage
from events.store import EXPECTED_LAST_SUBJECT_SEQ, EventStore
from services.bench.args import described, log_level, output_file, positive, positive_seconds
from services.bench.e2e import Offers, process_cpu
from services.bench.ingest import throwaway_server
from services.bench.route_report import RATES, RateFigures, RunFigures, fmt, report
from services.bootstrap import seed_agents
from services.config import AgentSeed, Config

# Nobody accepts in this bench, and every offer is held for the whole run: at the default 30 s
# the burst's 5,000 offers expired during the 1,000/s phase and the router re-offered ~4,700
# of them at once and set agents away for missing them, a storm a roster that answers never makes.
OFFER_HELD_S = 3600.0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the ceiling ---------------------------------------------------------------------------------


@dataclass
class Ceiling:
    msgs_per_s: float
    client_cpu_ms: float  # per message: the loop's own process
    server_cpu_ms: float  # per message: the nats-server serving it


async def measure_ceiling(nc: NATS, count: int, server_pid: int) -> Ceiling:
    """Bare fetch + conditional append, pipelined: messages/s, and the CPU each message costs
    the loop and the server."""
    js = nc.jetstream()
    run = uuid.uuid4().hex[:6]
    await js.add_stream(StreamConfig(name=f"BENCH_IN_{run}", subjects=[f"bench.{run}.in.>"]))
    await js.add_stream(StreamConfig(name=f"BENCH_LOG_{run}", subjects=[f"bench.{run}.log.>"]))
    payload = encode(inbound(0, "ceiling"))
    for chunk in range(0, count, 512):
        await asyncio.gather(
            *(js.publish(f"bench.{run}.in.sms", payload) for _ in range(chunk, min(count, chunk + 512)))
        )
    sub = await js.pull_subscribe(
        f"bench.{run}.in.>", durable="ceiling", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
    )
    done = 0
    start, client_cpu, server_cpu = time.perf_counter(), time.process_time(), process_cpu(server_pid)
    while done < count:
        msgs = await sub.fetch(256, timeout=5)

        async def one(n: int, data: bytes) -> None:
            headers = {EXPECTED_LAST_SUBJECT_SEQ: "0"}  # a fresh subject each: the guard is checked
            await js.publish(f"bench.{run}.log.c{n}", data, headers=headers)

        await asyncio.gather(*(one(done + i, m.data) for i, m in enumerate(msgs)))
        for m in msgs:
            await m.ack()
        done += len(msgs)
    elapsed = time.perf_counter() - start
    client_ms = 1000 * (time.process_time() - client_cpu) / count
    server_ms = 1000 * (process_cpu(server_pid) - server_cpu) / count
    await js.delete_stream(f"BENCH_IN_{run}")
    await js.delete_stream(f"BENCH_LOG_{run}")
    return Ceiling(count / elapsed, client_ms, server_ms)


# -- the pipeline --------------------------------------------------------------------------------


def inbound(n: int, run: str) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC),
        channel="sms",
        provider="twilio",
        provider_message_id=f"SMroute{run}{n:07d}",
        sender=f"+1{abs(hash(run)) % 900 + 100}{n:07d}",
        recipient="+15557654321",
        text="Hello, my invoice is wrong and I need a refund",
    )


def roster(agents: int, room: int) -> tuple[AgentSeed, ...]:
    # Every agent could take every conversation of the run: the router never runs out of
    # eligible agents (nobody accepts or resolves here), so what is measured is the pipeline.
    per_agent = room
    return tuple(
        AgentSeed(
            id=f"agent-{i:04d}",
            skills={"billing": 1 + i % 3, "technical": 1 + (i + 1) % 3},
            languages={"en": 5, "es": 3},
            tier=1 + i % 2,
            capacity={"sms": per_agent, "chat": 3, "email": 5},
            max_total=per_agent + 10,
        )
        for i in range(agents)
    )


class Processes:
    """``relaydesk router`` / ``relaydesk intake`` processes against the bench's server."""

    def __init__(self, nats_url: str, log_dir: Path, log_level: str) -> None:
        self.nats_url = nats_url
        self.log_dir = log_dir
        self.log_level = log_level
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: str, *args: str) -> None:
        env = {
            **os.environ,
            "RELAYDESK_NATS_URL": self.nats_url,
            "RELAYDESK_DATA_DIR": str(self.log_dir / "data"),
            "RELAYDESK_LOG_FORMAT": "json",
            "RELAYDESK_LOG_LEVEL": self.log_level,
            "RELAYDESK_RUNNER_INSTANCE_ID": name,
            # No health listener: a bench's processes must not fail on a port another run holds.
            "RELAYDESK_HEALTH_PORT": "0",
        }
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", command, *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    async def started(self, name: str, marker: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        path = self.log_dir / f"{name}.log"
        while time.monotonic() < deadline:
            if path.exists() and marker in path.read_text():
                return
            if self.procs[name].poll() is not None:
                raise SystemExit(f"bench route: {name} stopped: {path.read_text()[-2000:]}")
            await asyncio.sleep(0.1)
        raise SystemExit(f"bench route: {name} did not start within {timeout:.0f} s")

    def stop(self, *names: str) -> None:
        for name in names or tuple(self.procs):
            proc = self.procs.pop(name)
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def offered_within(offers: Offers, started: dict[str, float], wait: float) -> list[float]:
    """Latencies (s) of the messages ``started`` (pid → send time) once offered, waiting up to ``wait``."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(pid not in offers.offered_at for pid in started):
        await asyncio.sleep(0.05)
    return [offers.offered_at[pid] - at for pid, at in started.items() if pid in offers.offered_at]


async def saturation(nc: NATS, offers: Offers, count: int, wait: float) -> tuple[float | None, int]:
    js = nc.jetstream()
    run = uuid.uuid4().hex[:6]
    started: dict[str, float] = {}
    messages = [inbound(n, run) for n in range(count)]
    first = time.monotonic()
    for chunk in range(0, count, 256):
        batch = messages[chunk : chunk + 256]
        for m in batch:
            started[m.provider_message_id] = time.monotonic()
        await asyncio.gather(
            *(
                js.publish(subjects.inbound("sms"), encode(m), headers={"Nats-Msg-Id": f"sms:{m.provider_message_id}"})
                for m in batch
            )
        )
    latencies = await offered_within(offers, started, wait)
    if not latencies:
        return None, 0
    last = max(offers.offered_at[pid] for pid in started if pid in offers.offered_at)
    return len(latencies) / (last - first), len(latencies)


async def paced(nc: NATS, offers: Offers, rate: int, seconds: float, wait: float) -> RateFigures:
    js = nc.jetstream()
    run = uuid.uuid4().hex[:6]
    count = int(rate * seconds)
    started: dict[str, float] = {}
    inflight: set[asyncio.Task[Any]] = set()
    t0 = time.monotonic() + 0.05
    for n in range(count):
        at = t0 + n / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        m = inbound(n, run)
        started[m.provider_message_id] = at  # the schedule: a late send counts against us
        task = asyncio.create_task(
            js.publish(subjects.inbound("sms"), encode(m), headers={"Nats-Msg-Id": f"sms:{m.provider_message_id}"})
        )
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:
        await asyncio.wait(list(inflight))
    latencies = await offered_within(offers, started, wait)
    recorded = [offers.received_at[pid] - at for pid, at in started.items() if pid in offers.received_at]
    return RateFigures(
        rate,
        count,
        len(latencies),
        _percentile(latencies, 0.5),
        _percentile(latencies, 0.99),
        _percentile(recorded, 0.5),
        _percentile(recorded, 0.99),
    )


@contextlib.asynccontextmanager
async def watching(nats_url: str) -> AsyncIterator[tuple[NATS, Offers]]:
    offers = Offers()
    nc = await nats.connect(nats_url, name="bench-route")
    try:
        await nc.subscribe(
            subjects.CUSTOMER_EVENTS_ALL, cb=offers.on_event, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30
        )
        yield nc, offers
    finally:
        await nc.close()


async def bench(args: argparse.Namespace) -> list[RunFigures]:
    """Per intake count, a fresh server, router and roster (nobody accepts or resolves in a
    bench, so a router that already holds the previous run's offers would decide slower),
    and the ceiling measured on that same server first."""
    runs: list[RunFigures] = []
    for k in args.intakes:
        async with throwaway_server() as server:
            assert server.process is not None
            runs.append(await bench_one(args, server.url, server.process.pid, k))
    return runs


async def bench_one(args: argparse.Namespace, nats_url: str, server_pid: int, k: int) -> RunFigures:
    figures = RunFigures(k)
    nc = await nats.connect(nats_url, name="bench-ceiling")
    try:
        ceiling = await measure_ceiling(nc, args.messages, server_pid)
        figures.ceiling_msgs_per_s = ceiling.msgs_per_s
        figures.ceiling_client_cpu_ms, figures.ceiling_server_cpu_ms = ceiling.client_cpu_ms, ceiling.server_cpu_ms
        print(f"  ceiling (bare fetch + conditional append, pipelined): {figures.ceiling_msgs_per_s:,.0f} msg/s")
        config = Config()
        config.agents = roster(args.agents, args.messages + int(sum(RATES) * args.seconds) + 1000)
        await seed_agents(EventStore(nc, nc.jetstream()), config)
    finally:
        await nc.close()
    with tempfile.TemporaryDirectory(prefix="relaydesk-bench-route-") as tmp:
        procs = Processes(nats_url, Path(tmp), args.log_level)
        try:
            config_file = Path(tmp) / "router.toml"
            config_file.write_text(f"[router]\noffer_timeout_seconds = {OFFER_HELD_S:.0f}\n")
            procs.start("router", "router", "--config", str(config_file))
            await procs.started("router", '"router.started"')
            names = [f"intake{i}" for i in range(k)]
            for name in names:
                procs.start(name, "intake")
            for name in names:
                await procs.started(name, '"intake.started"')
            async with watching(nats_url) as (nc, offers):
                await saturation(nc, offers, min(200, args.messages), 30)  # warm-up
                pids = [procs.procs[name].pid for name in names]
                cpu = [process_cpu(pid) for pid in pids]
                router_cpu = process_cpu(procs.procs["router"].pid)
                server_cpu = process_cpu(server_pid)
                rate, offered = await saturation(nc, offers, args.messages, max(30.0, args.messages / 50))
                used = sum(process_cpu(pid) - before for pid, before in zip(pids, cpu, strict=True))
                figures.intake_cpu_ms = 1000 * used / max(offered, 1)
                figures.router_cpu_ms = 1000 * (process_cpu(procs.procs["router"].pid) - router_cpu) / max(offered, 1)
                # The server also serves this process's publishing and watching: a few percent.
                figures.server_cpu_ms = 1000 * (process_cpu(server_pid) - server_cpu) / max(offered, 1)
                figures.saturation_per_s, figures.saturation_offered = rate, offered
                figures.saturation_sent = args.messages
                print(f"  {k} intake: {rate or 0:,.0f} conv/s ({offered}/{args.messages})", flush=True)
                for r in RATES:
                    figures.rates.append(await paced(nc, offers, r, args.seconds, 30.0))
                    f = figures.rates[-1]
                    print(
                        f"  {k} intake: {r}/s p50 {fmt(f.p50_ms, '.1f')} ms, p99 {fmt(f.p99_ms, '.1f')} ms"
                        f" (recorded by intake: p50 {fmt(f.intake_p50_ms, '.1f')}, p99 {fmt(f.intake_p99_ms, '.1f')})"
                    )
        finally:
            procs.stop()
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relaydesk bench route", description=described(__doc__))
    parser.add_argument("--messages", type=positive, default=5_000, help="burst size at saturation (default 5,000)")
    parser.add_argument("--seconds", type=positive_seconds, default=10.0, help="seconds per fixed rate (default 10)")
    parser.add_argument("--agents", type=positive, default=500, help="agents (default 500)")
    parser.add_argument(
        "--intakes", type=positive, nargs="+", default=[1, 3], help="intake process counts (default 1 3)"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 messages, 3 s per rate: for development")
    parser.add_argument("--log-level", type=log_level, default="info", help="the services' log level (default info)")
    parser.add_argument("--json", metavar="FILE", type=output_file, help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.seconds = 1_000, 3.0
    print(f"bench route: {args.messages:,} messages, {args.agents} agents, rates {RATES} for {args.seconds:g} s")
    runs = asyncio.run(bench(args))
    out = report(runs, args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0
