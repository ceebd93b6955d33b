"""``relaydesk bench e2e``: signed Twilio webhooks to an offer on the log, the whole system.

One run, one throw-away nats-server (``EmbeddedNats`` in a temporary directory):

1. **ceiling** (``relaydesk bench ingest``'s): a minimal aiohttp handler that checks the
   signature and publishes with an acked JetStream publish, in this process;
2. **the system**: ``services.up.serve_all`` in this process (intake, router, projector, API,
   delivery; ``--agents`` agents, 500 by default, able to take every conversation of the run)
   with the SMS connector in 1, then 2, processes of its own (``relaydesk connector sms``),
   the load spread over them.

Every webhook comes from a new customer (a new number) and asks for billing: each must end in
an ``AgentOffered`` on the log. The load comes from a separate process (``services.bench.loadgen``).
Per connector count: webhooks accepted per second, conversations offered per second (first
webhook sent to last offer on the log), p50/p99 from a webhook's send to its offer, and the
connector processes' CPU per webhook. The target: offers/s ≥ 0.75 of the ceiling's webhooks/s
(the connector, not intake, is the limit). A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import msgspec
import nats
from nats.aio.msg import Msg

from events import subjects
from events.codec import decode_log_event
from events.model import AgentOffered, MessageReceived
from services.bench.args import described, output_file, positive, process_counts
from services.bench.ingest import TOKEN, configure_logs, serving_minimal, throwaway_nats
from services.bench.loadgen import LoadGenerator
from services.bus.embedded import free_port
from services.config import AgentSeed, Config, load
from services.up import Started, serve_all

TARGET = 0.75  # offers/s over the ceiling's webhooks/s
API_TOKEN = "bench-operator-token"


@dataclass
class Offers:
    """Watches the log (a core subscription on ``rd.evt.c.>``): which conversation is whose
    webhook (``MessageReceived.provider_message_id``) and when each was first offered."""

    conversation_of: dict[str, str] = field(default_factory=dict)  # conversation -> MessageSid
    received_at: dict[str, float] = field(default_factory=dict)  # MessageSid -> monotonic, intake's record seen
    offered_at: dict[str, float] = field(default_factory=dict)  # MessageSid -> monotonic
    pending: dict[str, float] = field(default_factory=dict)  # conversation -> offered before its message was seen

    async def on_event(self, msg: Msg) -> None:
        now = time.monotonic()
        try:
            event = decode_log_event(msg.data, subject=msg.subject)
        except (msgspec.DecodeError, ValueError):
            return  # not ours to judge here: intake's quarantine deals with bad events
        if isinstance(event, MessageReceived):
            self.conversation_of.setdefault(event.conversation_id, event.provider_message_id)
            self.received_at.setdefault(event.provider_message_id, now)
            if (at := self.pending.pop(event.conversation_id, None)) is not None:
                self.offered_at.setdefault(event.provider_message_id, at)
        elif isinstance(event, AgentOffered):
            sid = self.conversation_of.get(event.conversation_id)
            if sid is None:
                self.pending.setdefault(event.conversation_id, now)
            else:
                self.offered_at.setdefault(sid, now)


def system_config(data_dir: Path, nats_url: str, agents: int) -> Config:
    config = load(
        env={
            "RELAYDESK_NATS_URL": nats_url,
            "RELAYDESK_DATA_DIR": str(data_dir),
            "RELAYDESK_API_PORT": str(free_port()),
            "RELAYDESK_API_TOKEN": API_TOKEN,
        }
    )
    config.connectors = {}  # the SMS connector runs in processes of its own
    config.agents = tuple(
        AgentSeed(
            id=f"agent-{i:04d}",
            skills={"billing": 1 + i % 3, "technical": 1 + (i + 1) % 3},
            languages={"en": 5, "es": 3},
            tier=1 + i % 2,
            capacity={"sms": 50, "chat": 3, "email": 5},
        )
        for i in range(agents)
    )
    return config


@contextlib.asynccontextmanager
async def running_system(config: Config, nats_url: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    started: list[Started] = []
    task = asyncio.create_task(serve_all(config, nats_url, API_TOKEN, stop, started.append))
    deadline = time.monotonic() + 60
    while not started:
        if task.done():
            raise SystemExit(f"bench e2e: the system stopped early ({task.result()!r})")
        if time.monotonic() > deadline:
            raise SystemExit("bench e2e: the system did not start within 60 s")
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def connector_processes(
    count: int, nats_url: str, data_dir: Path, log_file: str
) -> AsyncIterator[list[tuple[int, int]]]:
    """``count`` times ``relaydesk connector sms``, each on a free port; yields (port, pid) of
    each once every one answers ``/readyz``."""
    ports = [free_port() for _ in range(count)]
    log, procs = _spawn(ports, nats_url, data_dir, log_file)
    try:
        async with aiohttp.ClientSession() as http:
            for port, proc in zip(ports, procs, strict=True):
                await _ready(http, f"http://127.0.0.1:{port}/readyz", proc)
        yield [(port, proc.pid) for port, proc in zip(ports, procs, strict=True)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _spawn(
    ports: Sequence[int], nats_url: str, data_dir: Path, log_file: str
) -> tuple[IO[bytes], list[subprocess.Popen[bytes]]]:
    log = open(log_file, "ab")  # noqa: SIM115 - closed by connector_processes, after the processes
    procs: list[subprocess.Popen[bytes]] = []
    code = "import sys; from services.cli import main; sys.exit(main(['connector', 'sms']))"
    for port in ports:
        env = {
            **os.environ,
            "RELAYDESK_NATS_URL": nats_url,
            "RELAYDESK_DATA_DIR": str(data_dir),
            "RELAYDESK_TWILIO_AUTH_TOKEN": TOKEN,
            "RELAYDESK_CONNECTOR_SMS_HOST": "127.0.0.1",
            "RELAYDESK_CONNECTOR_SMS_PORT": str(port),
            "RELAYDESK_LOG_FORMAT": "json",
            # Answers /readyz on its own port: no second listener (two processes would both
            # want [health]'s 9090, and the second would stop with "port taken").
            "RELAYDESK_HEALTH_PORT": "0",
        }
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log))
    return log, procs


async def _ready(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench e2e: connector exited with {proc.returncode} (see --log-file)")
        try:
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass  # not listening yet: try again until the deadline
        await asyncio.sleep(0.1)
    raise SystemExit(f"bench e2e: {url} not ready within 30 s")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc (0.0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    label: str
    webhooks_per_s: float
    offers_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    connector_cpu_ms: float | None = None
    offered: int = 0
    sent: int = 0
    not_accepted: int = 0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


CEILING_STREAM = "BENCH_CEILING"
CEILING_SUBJECT = "bench.ceiling.sms"


async def measure_ceiling(gen: LoadGenerator, nats_url: str, count: int, concurrency: int) -> Figures:
    """The ceiling publishes into a stream of its own, configured as ``RD_INBOUND`` is: intake
    must not see its messages."""
    nc = await nats.connect(nats_url, name="bench-minimal")
    try:
        js = nc.jetstream()
        inbound = (await js.stream_info(subjects.INBOUND_STREAM)).config
        await js.add_stream(
            dataclasses.replace(inbound, name=CEILING_STREAM, subjects=[CEILING_SUBJECT], description=None)
        )
        async with serving_minimal(nc, TOKEN, CEILING_SUBJECT) as url:
            await gen.run(url, TOKEN, uuid.uuid4().hex[:8], min(count, 500), concurrency)  # warm-up
            best: Figures | None = None
            for _ in range(2):
                load = await gen.run(url, TOKEN, uuid.uuid4().hex[:8], count, concurrency)
                rate = len(load.latencies) / load.elapsed if load.elapsed else 0.0
                if best is None or rate > best.webhooks_per_s:
                    best = Figures(
                        "ceiling: minimal handler, acked publish",
                        rate,
                        p50_ms=_percentile(load.latencies, 0.5),
                        p99_ms=_percentile(load.latencies, 0.99),
                        sent=load.sent,
                    )
            assert best is not None
            return best
    finally:
        await nc.close()


async def measure_system(
    gen: LoadGenerator,
    offers: Offers,
    ports: list[int],
    pids: list[int],
    count: int,
    concurrency: int,
    wait: float,
    first: int,
) -> Figures:
    """``count`` webhooks from numbers ``first``… (new customers), spread over the connectors."""
    urls = [f"http://127.0.0.1:{port}/twilio/sms" for port in ports]
    cpu = [process_cpu(pid) for pid in pids]
    load = await gen.run(urls, TOKEN, uuid.uuid4().hex[:8], count, concurrency, first=first)
    connector_cpu = sum(process_cpu(pid) - before for pid, before in zip(pids, cpu, strict=True))
    accepted = len(load.latencies)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and sum(1 for sid in load.started if sid in offers.offered_at) < accepted:
        await asyncio.sleep(0.05)
    latencies = [offers.offered_at[sid] - at for sid, at in load.started.items() if sid in offers.offered_at]
    offered = len(latencies)
    began = min(load.started.values(), default=0.0)
    last = max((offers.offered_at[sid] for sid in load.started if sid in offers.offered_at), default=began)
    label = f"system, {len(ports)} SMS connector process{'es' if len(ports) > 1 else ''}"
    return Figures(
        label,
        accepted / load.elapsed if load.elapsed else 0.0,
        offers_per_s=offered / (last - began) if last > began else None,
        p50_ms=_percentile(latencies, 0.5),
        p99_ms=_percentile(latencies, 0.99),
        connector_cpu_ms=1000 * connector_cpu / max(accepted, 1),
        offered=offered,
        sent=load.sent,
        not_accepted=load.sent - accepted,
    )


async def bench(count: int, agents: int, concurrency: int, connectors: Sequence[int], log_file: str) -> list[Figures]:
    out: list[Figures] = []
    gen = LoadGenerator()
    try:
        async with throwaway_nats() as nats_url:
            out.append(await measure_ceiling(gen, nats_url, count, concurrency))
            print(f"  {out[-1].label}: {out[-1].webhooks_per_s:,.0f} webhooks/s", flush=True)
            with tempfile.TemporaryDirectory(prefix="relaydesk-bench-e2e-") as tmp:
                config = system_config(Path(tmp) / "data", nats_url, agents)
                async with running_system(config, nats_url):
                    offers = Offers()
                    nc = await nats.connect(nats_url, name="bench-offers")
                    try:
                        await nc.subscribe(
                            subjects.CUSTOMER_EVENTS_ALL,
                            cb=offers.on_event,
                            pending_msgs_limit=1_000_000,
                            pending_bytes_limit=1 << 30,
                        )
                        for k in connectors:
                            async with connector_processes(k, nats_url, Path(tmp) / "data", log_file) as procs:
                                ports, pids = [p for p, _ in procs], [pid for _, pid in procs]
                                wait = max(60.0, count / 20)
                                first = sum(f.sent for f in out[1:])  # new numbers every run: new customers
                                figures = await measure_system(
                                    gen, offers, ports, pids, count, concurrency, wait, first
                                )
                            out.append(figures)
                            print(
                                f"  {figures.label}: {figures.webhooks_per_s:,.0f} webhooks/s accepted, "
                                f"{figures.offered:,}/{figures.sent:,} offered",
                                flush=True,
                            )
                    finally:
                        await nc.close()
    finally:
        gen.close()
    return out


def report(figures: list[Figures]) -> dict[str, Any]:
    ceiling = figures[0].webhooks_per_s
    print()
    print(f"{'':42}{'webhooks/s':>11}{'offers/s':>10}{'of ceiling':>11}{'p50 ms':>9}{'p99 ms':>9}{'conn. CPU ms':>13}")
    rows = []
    for f in figures:
        ratio = f.offers_per_s / ceiling if f.offers_per_s and ceiling else None
        rows.append({**f.__dict__, "ratio_of_ceiling": ratio})
        print(
            f"{f.label:42}{f.webhooks_per_s:>11,.0f}{_fmt(f.offers_per_s, ',.0f'):>10}{_fmt(ratio, '.2f'):>11}"
            f"{_fmt(f.p50_ms, ',.0f'):>9}{_fmt(f.p99_ms, ',.0f'):>9}{_fmt(f.connector_cpu_ms, '.3f'):>13}"
        )
    best = max((r["ratio_of_ceiling"] or 0.0 for r in rows[1:]), default=0.0)
    verdict = "met" if best >= TARGET else "NOT met"
    print(f"best offers/s over the ceiling's webhooks/s: {best:.2f} (target ≥ {TARGET}) {verdict}")
    lost = [f"{f.label}: {f.sent - f.offered} of {f.sent} never offered" for f in figures[1:] if f.offered < f.sent]
    for line in lost:
        print("  " + line)
    return {
        "rows": rows,
        "best_ratio": best,
        "target": TARGET,
        "median_p50_ms": _median([f.p50_ms for f in figures[1:]]),
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relaydesk bench e2e", description=described(__doc__))
    parser.add_argument(
        "--webhooks", type=positive, default=3_000, help="webhooks (new customers) per run (default 3,000)"
    )
    parser.add_argument("--agents", type=positive, default=500, help="agents registered (default 500)")
    parser.add_argument("--concurrency", type=positive, default=64, help="connections in flight (default 64)")
    parser.add_argument(
        "--connectors", type=process_counts, default=[1, 2], help="SMS connector process counts to run (default 1,2)"
    )
    parser.add_argument("--quick", action="store_true", help="500 webhooks: for development")
    parser.add_argument("--log-file", default=os.devnull, help="where the services' and connectors' logs go")
    parser.add_argument("--json", metavar="FILE", type=output_file, help="also write the figures as JSON")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.quick:
        args.webhooks = 500
    configure_logs("info", args.log_file)
    print(
        f"{args.webhooks:,} signed webhooks from new customers per run, {args.agents} agents, "
        f"{args.concurrency} connections, SMS connector processes: {', '.join(map(str, args.connectors))}"
    )
    figures = asyncio.run(bench(args.webhooks, args.agents, args.concurrency, args.connectors, args.log_file))
    summary = report(figures)
    if args.json:
        out = {
            "bench": "e2e",
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "webhooks": args.webhooks,
            "agents": args.agents,
            "concurrency": args.concurrency,
            **summary,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0
