"""``relaydesk bench crypto``: what sealing personal data costs, each figure beside its ceiling.

Every figure is measured twice in the same run: without a ``PersonalDataCipher`` (clear: the
ceiling, the same code with nothing to seal or open) and with one (sealed), each side against
a throw-away embedded nats-server of its own (in a temporary directory). It prints both, the
cost (1 - sealed/clear) and whether it is under the issue's target (10%).

- ingest, new customers: ``EventStore.append_many`` of N ``MessageReceived`` (text and two
  metadata values sealed) for C customers, in chunks; the sealed store starts with an empty
  key cache and an empty ``RD_KEYS``, so it also creates the C keys (one request each);
- ingest, keys cached: N more such events from the same store (a running intake's case);
- replay and open: a fresh store (and, sealed, a fresh key cache) replays the 2N events and
  opens every one, as every service does on start;
- rebuild timelines: ``relaydesk rebuild timelines`` of those events into a fresh SQLite store;
- intake, new customers: the real ``services.intake.Intake.handle`` for M SMS from M new
  senders, 4 at a time (``[intake] workers``), both sides on one server: identity lookup and
  creation, the customer's history, four appends; 10 NATS requests per message clear, 11
  sealed (the new customer's data key);
- intake, again: one more SMS from each of those senders (6 requests; their sealed history
  is read and opened).

Rates are wall clock (client and servers share the machine: the server's work on bigger
payloads counts); CPU is this process's per item. The summary gives the best rate of each
side, and the cost of each round's pair (ingest and intake take turns chunk by chunk, so both
sides of a pair see the same moment of a shared machine): its median counts against the
target, its range shows the noise. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats
from nats.aio.client import Client as NATS

from events import subjects
from events.model import InboundMessage, MessageReceived
from events.personal import CustomerKeys, PersonalDataCipher
from events.store import Append, EventStore
from events.streams import ensure_streams
from services import logs
from services.bench.args import at_least, described, output_file, positive
from services.bus.embedded import EmbeddedNats
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.identity.addresses import IdentityRules
from services.intake import Intake
from services.rebuild import rebuild_timelines

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
TARGET = 0.10  # the ceiling on the cost: under 10% slower than without
TEXT = (
    "Hello, I was charged twice for my order 10{n:05d} last week and I would like a refund of the second "
    "charge to my card. My name is Customer {c} and you can call me on +1555{c:07d}. Thanks!"
)
INTAKE_WORKERS = 4
Step = Callable[[bool, int], Awaitable[None]]  # (sealed side?, step number)

# name -> what it measures (the label printed), in the order printed
FIGURES = {
    "ingest_new": "ingest, new customers (sealed: +{customers:,} keys made)",
    "ingest_warm": "ingest, keys cached",
    "replay": "replay and open ({events2:,} events, fresh key cache)",
    "timelines": "rebuild timelines (SQLite)",
    "intake_new": "intake (real Intake.handle): {messages:,} new customers' SMS",
    "intake_again": "intake (real Intake.handle): a 2nd SMS from each",
}


@dataclass
class Run:
    sealed: bool
    rate: dict[str, float] = field(default_factory=dict)  # items per second, wall clock
    cpu_us: dict[str, float] = field(default_factory=dict)  # this process's CPU per item


def events(n: int, customers: int, first: int = 0) -> list[Append]:
    out: list[Append] = []
    for i in range(first, first + n):
        c = i % customers
        out.append(
            Append(
                MessageReceived(
                    at=T0,
                    customer_id=f"cu_bench{c:07d}",
                    conversation_id=f"cv_bench{c:07d}",
                    channel="email",
                    message_id=f"m{i}",
                    provider_message_id=f"<{i}@mail.example>",
                    text=TEXT.format(n=i, c=c),
                    language="en",
                    metadata={"subject": f"Refund for order 10{i:05d}", "from": f"customer{c}@example.com"},
                )
            )
        )
    return out


def sms(i: int, round_: int) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC),
        channel="sms",
        provider="twilio",
        provider_message_id=f"SMbench{round_}x{i:07d}",
        sender=f"+1555{i:07d}",
        recipient="+15550000000",
        text=TEXT.format(n=i, c=i),
    )


def store_for(nc: NATS, sealed: bool) -> EventStore:
    js = nc.jetstream()
    return EventStore(nc, js, timeout=30.0, cipher=PersonalDataCipher(CustomerKeys(js)) if sealed else None)


async def timed(run: Run, name: str, work: Callable[[], Awaitable[int]]) -> None:
    started, cpu = time.perf_counter(), time.process_time()
    count = await work()
    run.rate[name] = count / (time.perf_counter() - started)
    run.cpu_us[name] = (time.process_time() - cpu) / max(count, 1) * 1e6


@contextlib.asynccontextmanager
async def nats_server() -> AsyncIterator[tuple[NATS, Path]]:
    """A throw-away nats-server with the streams, and a connection to it."""
    with tempfile.TemporaryDirectory(prefix="relaydesk-bench-crypto-") as tmp:
        server = EmbeddedNats(store_dir=Path(tmp) / "js")
        await server.astart()
        try:
            nc = await nats.connect(server.url)
            try:
                await ensure_streams(nc.jetstream())
                yield nc, Path(tmp)
            finally:
                await nc.drain()
        finally:
            await server.astop()


async def taking_turns(runs: tuple[Run, Run], name: str, count: int, steps: int, step: Step) -> None:
    """``step(side, i)`` for i < ``steps``, the clear and the sealed side taking turns (who goes
    first alternating), each timed alone: both see the same moment of a shared machine."""
    spent = {False: [0.0, 0.0], True: [0.0, 0.0]}  # side -> wall, CPU
    for i in range(steps):
        for sealed in (False, True) if i % 2 == 0 else (True, False):
            started, cpu = time.perf_counter(), time.process_time()
            await step(sealed, i)
            spent[sealed][0] += time.perf_counter() - started
            spent[sealed][1] += time.process_time() - cpu
    for run in runs:
        run.rate[name] = count / spent[run.sealed][0]
        run.cpu_us[name] = spent[run.sealed][1] / count * 1e6


async def log_pair(
    runs: tuple[Run, Run], first: list[Append], second: list[Append], chunk: int, *, sealed_first: bool = False
) -> None:
    """Ingest on two servers at once (one per side, taking turns by chunks); then replay and
    rebuild each side's log in turn, ``sealed_first`` or not (a replay's messages arrive in the
    background, so two cannot take turns without each paying for the other's)."""
    async with nats_server() as (nc_clear, tmp_clear), nats_server() as (nc_sealed, tmp_sealed):
        nc, tmp = {False: nc_clear, True: nc_sealed}, {False: tmp_clear, True: tmp_sealed}
        stores = {sealed: store_for(nc[sealed], sealed) for sealed in (False, True)}
        for name, items in (("ingest_new", first), ("ingest_warm", second)):

            async def ingest(sealed: bool, i: int, items: list[Append] = items) -> None:
                await stores[sealed].append_many(items[i * chunk : (i + 1) * chunk])

            await taking_turns(runs, name, len(items), -(-len(items) // chunk), ingest)
        for run in runs[::-1] if sealed_first else runs:

            async def replay(run: Run = run) -> int:
                seen = 0
                async for batch in store_for(nc[run.sealed], run.sealed).replay(subjects.EVENTS_ALL, 1):
                    seen += sum(1 for s in batch if isinstance(s.event, MessageReceived) and s.event.text)
                if seen != len(first) + len(second):
                    raise SystemExit(f"replayed {seen} of {len(first) + len(second)} events")
                return seen

            async def timelines(run: Run = run) -> int:
                target = str(tmp[run.sealed] / "timelines.db")
                return (await rebuild_timelines(store_for(nc[run.sealed], run.sealed), target, progress=False)).events

            await timed(run, "replay", replay)
            await timed(run, "timelines", timelines)


async def intake_pair(runs: tuple[Run, Run], messages: int, block: int = 20) -> None:
    """Both intakes on one server, taking turns by blocks of ``block`` messages, each with
    senders of its own (new customers, then each of them again)."""
    async with nats_server() as (nc, _tmp):
        js = nc.jetstream()
        settings = IntakeSettings()
        directory = IdentityDirectory(
            await js.key_value(subjects.IDENTITY_BUCKET), IdentityRules.from_settings(settings)
        )
        await directory.secret()  # the HMAC key of addresses: there with or without encryption
        intakes = {sealed: Intake(store_for(nc, sealed), directory, settings) for sealed in (False, True)}
        for sealed, intake in intakes.items():  # warm up (the language model loads on first use)
            for i in range(3):
                await intake.handle(sms(9_999_000 + 10 * sealed + i, 0))
        gate = asyncio.Semaphore(INTAKE_WORKERS)

        async def one(intake: Intake, message: InboundMessage) -> None:
            async with gate:
                if await intake.handle(message) is None:
                    raise SystemExit(f"intake recorded nothing for {message.provider_message_id}")

        for name, round_ in (("intake_new", 1), ("intake_again", 2)):

            async def handle(sealed: bool, i: int, round_: int = round_) -> None:
                senders = range(sealed * messages + i * block, sealed * messages + min((i + 1) * block, messages))
                await asyncio.gather(*(one(intakes[sealed], sms(n, round_)) for n in senders))

            await taking_turns(runs, name, messages, -(-messages // block), handle)


async def bench(n: int, customers: int, messages: int, rounds: int, chunk: int) -> list[Run]:
    first, second = events(n, customers), events(n, customers, first=n)
    runs: list[Run] = []
    for round_ in range(rounds):
        pair = (Run(False), Run(True))
        await log_pair(pair, first, second, chunk, sealed_first=round_ % 2 == 1)
        if messages:
            await intake_pair(pair, messages)
        for run in pair:
            runs.append(run)
            figures = "  ".join(f"{name} {run.rate[name]:>7,.0f}/s {run.cpu_us[name]:>5.0f}µs" for name in run.rate)
            print(f"  round {round_ + 1} {'sealed' if run.sealed else 'clear '}  {figures}", flush=True)
    return runs


def report(runs: list[Run], labels: dict[str, str]) -> None:
    """Per figure: the clear rate (the ceiling) and the sealed one, best of the rounds; the
    cost (1 - sealed/clear) of each round's pair, median and range, judged against TARGET;
    and this process's CPU per item, lowest of the rounds, clear and sealed."""
    clear = [r for r in runs if not r.sealed]
    sealed = [r for r in runs if r.sealed]
    print(
        f"\n{'':<62}{'clear=ceiling':>14}{'sealed':>10}{'cost: median':>14}{'range':>13}"
        f"{'CPU/item clear':>16}{'sealed':>9}  target: cost < {TARGET:.0%}"
    )
    for name, label in labels.items():
        if name not in clear[0].rate:
            continue
        costs = [1 - s.rate[name] / c.rate[name] for c, s in zip(clear, sealed, strict=True)]
        cost = statistics.median(costs)
        cpu_clear = min(r.cpu_us[name] for r in clear)
        cpu_sealed = min(r.cpu_us[name] for r in sealed)
        print(
            f"{label:<62}{max(r.rate[name] for r in clear):>12,.0f}/s{max(r.rate[name] for r in sealed):>8,.0f}/s"
            f"{cost:>+14.1%}{f'{min(costs):+.0%}..{max(costs):+.0%}':>13}"
            f"{cpu_clear:>13.0f} µs{cpu_sealed:>6.0f} µs  {'met' if cost < TARGET else 'MISSED'}"
            f" (CPU {cpu_sealed - cpu_clear:+.1f} µs, {cpu_sealed / cpu_clear - 1:+.0%})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relaydesk bench crypto", description=described(__doc__))
    parser.add_argument("--events", type=positive, default=20_000, help="events per ingest pass (default 20,000)")
    parser.add_argument(
        "--customers", type=positive, default=1_000, help="customers (keys) they belong to (default 1,000)"
    )
    parser.add_argument(
        "--messages", type=at_least(0), default=500, help="SMS per intake pass; 0 skips intake (default 500)"
    )
    parser.add_argument("--rounds", type=positive, default=3, help="clear/sealed pairs (default 3)")
    parser.add_argument("--chunk", type=positive, default=2_000, help="events per append_many call (default 2,000)")
    parser.add_argument("--quick", action="store_true", help="2,000 events, 100 SMS, 1 round: for development")
    parser.add_argument(
        "--json", metavar="FILE", type=output_file, help="also write every round's rates and CPU per item as JSON"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.quick:
        args.events, args.customers, args.messages, args.rounds = 2_000, 100, 100, 1
    logs.configure(level="warning", fmt="console")
    sizes = {"customers": args.customers, "events2": 2 * args.events, "messages": args.messages}
    labels = {name: label.format(**sizes) for name, label in FIGURES.items()}
    print(
        f"{args.events:,} MessageReceived events of {args.customers:,} customers per ingest pass, "
        f"{args.messages:,} SMS per intake pass, {args.rounds} rounds (rates per second, CPU per item)"
    )
    runs = asyncio.run(bench(args.events, args.customers, args.messages, args.rounds, args.chunk))
    report(runs, labels)
    if args.json:
        rounds = [{"sealed": r.sealed, "rate_per_s": r.rate, "cpu_us_per_item": r.cpu_us} for r in runs]
        Path(args.json).write_text(json.dumps({"figures": labels, "target_cost": TARGET, "rounds": rounds}, indent=2))
    return 0
