"""``relaydesk bench ingest``: signed Twilio webhooks per second through one SMS connector.

Everything runs in one run against one throw-away nats-server (``EmbeddedNats`` in a temporary
directory, with the streams ``ensure_streams`` makes):

- **connector**: a real ``ConnectorRuntime`` around ``TwilioSmsConnector`` (outbound worker
  on, logs at ``--log-level``, rendered as JSON to ``--log-file``, /dev/null by default), in
  this process;
- **ceiling**: a minimal aiohttp handler in this process doing the same work with nothing
  else: read the body, check ``X-Twilio-Signature`` (HMAC-SHA1 over the URL and the sorted
  form), publish it on ``rd.inbound.sms`` with a ``Nats-Msg-Id`` and wait for the JetStream
  ack, answer empty TwiML.

The load comes from a separate process (``services.bench.loadgen``: a raw asyncio HTTP client,
requests signed before the clock starts, ``--concurrency`` keep-alive connections). Rounds
alternate ceiling and connector so each pair sees the same moment of a shared machine. Per
side: webhooks/s (wall clock), p50/p99 latency, and this process's CPU per webhook (the
server side only: the generator and nats-server are other processes). The summary gives each
side's best rate, and the per-pair ratios (median and range) against the targets: rate ≥ 0.75
of the ceiling, CPU ≤ 1.3 times the ceiling's. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import nats
import structlog
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events import subjects
from events.streams import ensure_streams
from services import logs
from services.bench.args import described, log_level, output_file, positive
from services.bench.loadgen import Load, LoadGenerator
from services.bus.embedded import EmbeddedNats

TOKEN = "bench-token"
RATE_TARGET = 0.75  # connector webhooks/s over the ceiling's
CPU_TARGET = 1.3  # connector CPU per webhook over the ceiling's
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


# -- the ceiling -------------------------------------------------------------------------------


def minimal_app(js: JetStreamContext, token: str, subject: str) -> web.Application:
    """The same check and an acked publish, nothing else."""
    key = token.encode()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        params = parse_qsl(body.decode(), keep_blank_values=True)
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        payload = url + "".join(k + v for k, v in sorted(params))
        expected = base64.b64encode(hmac.new(key, payload.encode(), hashlib.sha1).digest())
        if not hmac.compare_digest(expected, request.headers.get("X-Twilio-Signature", "").encode()):
            return web.Response(status=403)
        sid = dict(params).get("MessageSid", "")
        await js.publish(subject, body, headers={"Nats-Msg-Id": f"sms:{sid}"})
        return web.Response(text=TWIML_EMPTY, content_type="text/xml")

    app = web.Application()
    app.router.add_post("/twilio/sms", handle)
    return app


@contextlib.asynccontextmanager
async def serving_minimal(nc: NATS, token: str, subject: str = subjects.inbound("sms")) -> AsyncIterator[str]:
    """The ceiling's handler, publishing on ``subject`` (by default where the connector does)."""
    runner = web.AppRunner(minimal_app(nc.jetstream(), token, subject), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/twilio/sms"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving_connector(nc: NATS, token: str) -> AsyncIterator[str]:
    from connectors.sdk.runtime import ConnectorRuntime
    from connectors.sms.connector import TwilioSmsConnector

    runtime = ConnectorRuntime(TwilioSmsConnector.from_config({"port": 0, "auth_token": token}), nc)
    [base] = await runtime.start()
    try:
        yield f"{base}/twilio/sms"
    finally:
        await runtime.stop()


@contextlib.asynccontextmanager
async def throwaway_nats() -> AsyncIterator[str]:
    async with throwaway_server() as server:
        yield server.url


@contextlib.asynccontextmanager
async def throwaway_server() -> AsyncIterator[EmbeddedNats]:
    """A nats-server of its own in a temporary directory, with Relaydesk's streams; the
    server's process is there to read its CPU (``server.process.pid``)."""
    with tempfile.TemporaryDirectory(prefix="relaydesk-bench-") as tmp:
        server = EmbeddedNats(store_dir=Path(tmp) / "js")
        url = server.start()
        try:
            nc = await nats.connect(url)
            try:
                await ensure_streams(nc.jetstream())
            finally:
                await nc.close()
            yield server
        finally:
            server.stop()


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Side:
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # server process CPU per webhook
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def add(self, load: Load, cpu: float) -> None:
        ok = len(load.latencies)
        self.rates.append(ok / load.elapsed if load.elapsed else 0.0)
        self.cpu_ms.append(1000 * cpu / max(ok, 1))
        self.latencies.extend(load.latencies)
        self.errors += load.sent - ok

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "webhooks_per_s_best": max(self.rates, default=0.0),
            "webhooks_per_s": self.rates,
            "cpu_ms_per_webhook_median": statistics.median(self.cpu_ms) if self.cpu_ms else None,
            "cpu_ms_per_webhook": self.cpu_ms,
            "p50_ms": self.percentile(0.50),
            "p99_ms": self.percentile(0.99),
            "errors": self.errors,
        }


async def measure(gen: LoadGenerator, url: str, count: int, concurrency: int) -> tuple[Load, float]:
    cpu = time.process_time()
    load = await gen.run(url, TOKEN, uuid.uuid4().hex[:8], count, concurrency)
    return load, time.process_time() - cpu


async def bench(count: int, rounds: int, concurrency: int) -> dict[str, Side]:
    sides = {"ceiling": Side(), "connector": Side()}
    gen = LoadGenerator()
    try:
        async with throwaway_nats() as nats_url:
            nc_min = await nats.connect(nats_url, name="bench-minimal")
            nc_con = await nats.connect(nats_url, name="bench-connector")
            try:
                async with serving_minimal(nc_min, TOKEN) as min_url, serving_connector(nc_con, TOKEN) as con_url:
                    urls = {"ceiling": min_url, "connector": con_url}
                    for url in urls.values():  # warm-up: connections, caches, lazy imports
                        await measure(gen, url, min(count, 500), concurrency)
                    for r in range(rounds):
                        order = ("ceiling", "connector") if r % 2 == 0 else ("connector", "ceiling")
                        for name in order:
                            load, cpu = await measure(gen, urls[name], count, concurrency)
                            sides[name].add(load, cpu)
                            print_round(r, name, sides[name], load)
            finally:
                await nc_min.close()
                await nc_con.close()
    finally:
        gen.close()
    return sides


def print_round(r: int, name: str, side: Side, load: Load) -> None:
    failed = load.sent - len(load.latencies)
    print(
        f"  round {r + 1} {name:9}: {side.rates[-1]:8,.0f} webhooks/s, {side.cpu_ms[-1]:.3f} ms CPU each, "
        f"generator CPU {load.cpu / max(load.elapsed, 1e-9):.0%}"
        + (f", {failed} not 200: {load.statuses}" if failed else ""),
        flush=True,
    )


def ratios(sides: dict[str, Side]) -> dict[str, Any]:
    c, m = sides["connector"], sides["ceiling"]
    rate = [a / b for a, b in zip(c.rates, m.rates, strict=True) if b]
    cpu = [a / b for a, b in zip(c.cpu_ms, m.cpu_ms, strict=True) if b]
    return {
        "rate_ratio_median": statistics.median(rate) if rate else None,
        "rate_ratio_range": [min(rate), max(rate)] if rate else None,
        "cpu_ratio_median": statistics.median(cpu) if cpu else None,
        "cpu_ratio_range": [min(cpu), max(cpu)] if cpu else None,
        "rate_target": RATE_TARGET,
        "cpu_target": CPU_TARGET,
    }


def report(sides: dict[str, Side], r: dict[str, Any]) -> None:
    print()
    print(f"{'':32}{'webhooks/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/webhook':>16}")
    labels = {"ceiling": "ceiling: minimal aiohttp handler", "connector": "SMS connector (ConnectorRuntime)"}
    for name, label in labels.items():
        s = sides[name].summary()
        print(
            f"{label:32}{s['webhooks_per_s_best']:>12,.0f}{s['p50_ms']:>9.1f}{s['p99_ms']:>9.1f}"
            f"{s['cpu_ms_per_webhook_median']:>16.3f}"
        )
    rate_ok = r["rate_ratio_median"] is not None and r["rate_ratio_median"] >= RATE_TARGET
    cpu_ok = r["cpu_ratio_median"] is not None and r["cpu_ratio_median"] <= CPU_TARGET
    lo, hi = r["rate_ratio_range"] or (0, 0)
    print(
        f"connector / ceiling, webhooks/s: {r['rate_ratio_median']:.2f} (pairs {lo:.2f}–{hi:.2f}; "
        f"target ≥ {RATE_TARGET}) {'met' if rate_ok else 'NOT met'}"
    )
    lo, hi = r["cpu_ratio_range"] or (0, 0)
    print(
        f"connector / ceiling, CPU per webhook: {r['cpu_ratio_median']:.2f}× (pairs {lo:.2f}–{hi:.2f}; "
        f"target ≤ {CPU_TARGET}×) {'met' if cpu_ok else 'NOT met'}"
    )


def configure_logs(level: str, path: str) -> None:
    """The services' own log setup (JSON), written to ``path``: rendering costs what it costs
    in production, without burying the table."""
    logs.configure(level, "json")
    stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=stream))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relaydesk bench ingest", description=described(__doc__))
    parser.add_argument("--webhooks", type=positive, default=5_000, help="webhooks per side per round (default 5,000)")
    parser.add_argument("--rounds", type=positive, default=4, help="ceiling/connector pairs (default 4)")
    parser.add_argument("--concurrency", type=positive, default=64, help="connections in flight (default 64)")
    parser.add_argument("--quick", action="store_true", help="1,000 webhooks, 2 rounds: for development")
    parser.add_argument("--log-level", type=log_level, default="info", help="the connector's log level (default info)")
    parser.add_argument("--log-file", default=os.devnull, help="where the connector's JSON logs go")
    parser.add_argument("--json", metavar="FILE", type=output_file, help="also write the figures as JSON")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.quick:
        args.webhooks, args.rounds = 1_000, 2
    configure_logs(args.log_level, args.log_file)
    print(
        f"{args.webhooks:,} signed Twilio webhooks per side per round, {args.rounds} rounds, "
        f"{args.concurrency} connections (load from a separate process; CPU is the server process's)"
    )
    sides = asyncio.run(bench(args.webhooks, args.rounds, args.concurrency))
    r = ratios(sides)
    report(sides, r)
    if args.json:
        out = {
            "bench": "ingest",
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "webhooks": args.webhooks,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "ceiling": sides["ceiling"].summary(),
            "connector": sides["connector"].summary(),
            **r,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0
