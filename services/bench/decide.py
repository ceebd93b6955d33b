"""``relaydesk bench decide``: what one routing decision costs at scale.

Builds synthetic router states by folding events (agents with random skills, languages,
tiers and capacities, every agent busy to capacity, then N conversations waiting), then:

- freed: an agent's conversation is resolved, decide gives the slot to the best waiting
  conversation it may take (one decision per call). Some of these calls decide nothing (no
  waiting conversation fits the freed agent); those are cheap and would flatter the figure,
  so the freed median and p99 count only calls that made an offer or assignment ("routed"
  calls, reported as routed/timed); the median over all calls is printed beside it;
- arrival: a new conversation arrives while every agent is busy (decide looks, decides nothing);
- cycle (the all-in figure): the steady state the router lives in. Each cycle a conversation
  arrives (opened, routing requested), one held conversation is resolved, decide runs, its
  offers and assignments are folded and the offers accepted; every 20th cycle an agent steps
  away and comes back. The CPU time of all of it (fold and decide) divided by the
  conversations routed is the **all-in CPU per routed conversation**; the fold's own CPU per
  event is reported by event type.

Times are CPU time of this process (``time.thread_time_ns``), not wall clock, so a busy
machine slows them less. The floor printed beside them is measured in the same run: the fold
of an event that changes no routing state (a message on an assigned conversation), which is
what any fold costs (dispatch, subject, timers); figures are also given as multiples of it,
the noise-proof way to compare runs on a shared machine. Each cell runs in its own process
so peaks do not mix. The figures measured by the code before the fold was made incremental
(same machine, same cell) are printed beside, as ``before``. The garbage collector's share of
the all-in figure is printed under it (``GcClock``): one full collection landing in the timed
cycles costs ~0.3 s at 10,000 agents x 100,000 waiting and would otherwise pass for a slower
router. A benchmark, not a test: it asserts nothing about time. The synthetic world (agents,
conversations, the timed fold) is ``services.bench.decide_workload``; the report's tables,
reference workload and collector clock are ``services.bench.decide_report``.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from multiprocessing import get_context

from events.model import (
    AgentOffered,
    AgentStatusChanged,
    Channel,
    ConversationAssigned,
    ConversationResolved,
    LogEvent,
    MessageReceived,
    OfferAccepted,
)
from router import snapshot
from router.decide import decide
from router.policy import RouterPolicy
from router.state import RouterState, reading_only
from services import collector
from services.bench.args import at_least, described, output_file, positive
from services.bench.decide_report import (
    BEFORE_10K_100K,
    BEFORE_FOLD_US,
    GC,
    TARGET_ALL_IN_US,
    before_figure,
    reference_us,
    report,
)
from services.bench.decide_workload import T0, Bench, Cell, build


@dataclass
class Result:
    cell: Cell
    build_s: float
    freed_median_us: float  # calls that routed (made an offer or assignment) only
    freed_p99_us: float
    freed_all_median_us: float  # every timed call, routed or not
    freed_routed: int  # timed calls that routed
    freed_calls: int
    arrival_median_us: float
    arrival_p99_us: float
    peak_mb: float
    queues: int
    build_fold_us: float  # mean CPU per event folded while building
    cycles: int = 0
    cycle_routed: int = 0
    all_in_us: float = 0.0  # CPU per routed conversation, fold and decide, in the cycle phase
    cycle_fold_us: float = 0.0  # of which the fold, per routed conversation
    cycle_decide_us: float = 0.0  # of which decide, per routed conversation
    # The same events folded by a read model (the API's view, ``reading_only``), per routed conversation
    read_fold_us: float = 0.0
    fold_by_type: dict[str, tuple[int, float]] = field(default_factory=dict)  # type: (events, mean µs)
    floor_us: float = 0.0  # fold of an event that changes nothing (same run): the ceiling
    reference_us: float = 0.0  # a fixed pure-Python workload (same run), to compare runs and versions
    cycle_gc_us: float = 0.0  # of the all-in figure, the garbage collector's share (``GcClock``)
    cycle_full_gcs: int = 0  # full collections inside the timed cycle phase


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed_decide(state: RouterState, now: datetime, policy: RouterPolicy) -> tuple[list[LogEvent], int]:
    GC.timing = True
    t0 = time.thread_time_ns()
    decisions = decide(state, now, policy)
    took = time.thread_time_ns() - t0
    GC.timing = False
    return [d.event for d in decisions], took


def cycle_phase(bench: Bench, now: datetime, policy: RouterPolicy, cycles: int, result: Result) -> datetime:
    """Steady state: arrival, resolution, decide, offers accepted; now and then an agent steps away."""
    state = bench.state
    held = [
        (conv.customer_id, conversation_id)
        for conversation_id, conv in state.conversations.items()
        if conv.status in ("assigned", "offered")
    ]
    rng = bench.rng
    agent_ids = sorted(state.agents)
    channels: list[Channel] = ["chat", "chat", "sms", "email"]
    bench.by_type.clear()
    # The API's view of the same log: a copy of the state (as from its snapshot), folded reading_only.
    bench.reader = reading_only(snapshot.load(snapshot.dump(state)))
    bench.reader_ns = 0
    fold_before = bench.fold_ns
    gc_before, full_before = GC.ns, GC.full
    decide_ns = 0
    routed = 0
    for n in range(cycles):
        now += timedelta(milliseconds=1)
        bench.open(rng.choice(channels), bench.requirements(), now)
        if held:
            at = rng.randrange(len(held))
            held[at], held[-1] = held[-1], held[at]
            customer_id, conversation_id = held.pop()
            bench.fold(ConversationResolved(at=now, customer_id=customer_id, conversation_id=conversation_id))
        if n % 20 == 19:
            agent_id = rng.choice(agent_ids)
            bench.fold(AgentStatusChanged(at=now, agent_id=agent_id, status="away"))
            bench.fold(AgentStatusChanged(at=now, agent_id=agent_id, status="available"))
        events, took = timed_decide(state, now, policy)
        decide_ns += took
        for event in events:
            bench.fold(event)
            if isinstance(event, AgentOffered | ConversationAssigned):
                routed += 1
                held.append((event.customer_id, event.conversation_id))
            if isinstance(event, AgentOffered):
                accepted = OfferAccepted(
                    at=now,
                    customer_id=event.customer_id,
                    conversation_id=event.conversation_id,
                    agent_id=event.agent_id,
                )
                bench.fold(accepted)
    fold_ns = bench.fold_ns - fold_before
    result.cycles = cycles
    result.cycle_routed = routed
    if routed:
        result.cycle_fold_us = fold_ns / 1000 / routed
        result.cycle_decide_us = decide_ns / 1000 / routed
        result.all_in_us = result.cycle_fold_us + result.cycle_decide_us
        result.read_fold_us = bench.reader_ns / 1000 / routed
        result.cycle_gc_us = (GC.ns - gc_before) / 1000 / routed
    result.cycle_full_gcs = GC.full - full_before
    bench.reader = None
    result.fold_by_type = {name: (count, ns / 1000 / count) for name, (count, ns) in sorted(bench.by_type.items())}
    return now


def fold_floor(bench: Bench, now: datetime, events: int) -> float:
    """CPU µs per fold of an event that changes no routing state: a message on an assigned conversation."""
    held = [
        (conversation_id, conv.customer_id, conv.channel)
        for conversation_id, conv in bench.state.conversations.items()
        if conv.status == "assigned"
    ][:events]
    spent = 0
    for n, (conversation_id, customer_id, channel) in enumerate(held):
        message = MessageReceived(
            at=now,
            customer_id=customer_id,
            conversation_id=conversation_id,
            channel=channel,
            message_id=f"m{n}",
            provider_message_id=f"p{n}",
        )
        before = bench.fold_ns
        bench.fold(message)
        spent += bench.fold_ns - before
    return spent / 1000 / len(held) if held else 0.0


def run_cell(cell: Cell) -> Result:
    if GC not in gc.callbacks:
        gc.callbacks.append(GC)
    started = time.perf_counter()
    bench = build(cell)
    build_s = time.perf_counter() - started
    build_fold_us = bench.fold_ns / 1000 / bench.seq
    # As the router does once caught up (services.router_runner, services.collector): the state
    # folded so far is out of the collector's sight, so what is timed is the router's own
    # collections, at the router's thresholds.
    before = collector.settle_in()
    try:
        return _measure_cell(cell, bench, build_s, build_fold_us)
    finally:
        collector.let_go(before)  # cells run one after another in one process with --in-process


def _measure_cell(cell: Cell, bench: Bench, build_s: float, build_fold_us: float) -> Result:
    state = bench.state
    policy = RouterPolicy()
    now = T0
    # The first call on a state decide has not seen scans everything once (as after a restart).
    for _ in range(100):
        decisions = decide(state, now, policy)
        if not decisions:
            break
        for decision in decisions:
            bench.fold(decision.event)

    freed: list[float] = []  # calls that routed
    freed_all: list[float] = []
    held = [
        (conv.customer_id, conversation_id)
        for conversation_id, conv in state.conversations.items()
        if conv.status in ("assigned", "offered")
    ]
    bench.rng.shuffle(held)
    for customer_id, conversation_id in held[: cell.decisions]:
        now += timedelta(milliseconds=1)
        bench.fold(ConversationResolved(at=now, customer_id=customer_id, conversation_id=conversation_id))
        events, took = timed_decide(state, now, policy)
        freed_all.append(took / 1000)
        if any(isinstance(event, AgentOffered | ConversationAssigned) for event in events):
            freed.append(took / 1000)
        for event in events:
            bench.fold(event)

    arrival: list[float] = []
    for _ in range(cell.decisions):
        now += timedelta(milliseconds=1)
        bench.open(bench.rng.choice(("chat", "email")), bench.requirements(), now)
        events, took = timed_decide(state, now, policy)
        arrival.append(took / 1000)
        for event in events:
            bench.fold(event)

    result = Result(
        cell=cell,
        build_s=build_s,
        freed_median_us=statistics.median(freed) if freed else 0.0,
        freed_p99_us=percentile(freed, 0.99) if freed else 0.0,
        freed_all_median_us=statistics.median(freed_all) if freed_all else 0.0,
        freed_routed=len(freed),
        freed_calls=len(freed_all),
        arrival_median_us=statistics.median(arrival) if arrival else 0.0,
        arrival_p99_us=percentile(arrival, 0.99) if arrival else 0.0,
        peak_mb=0.0,
        queues=len(state.queues),
        build_fold_us=build_fold_us,
    )
    result.floor_us = fold_floor(bench, now, cell.decisions)
    result.reference_us = reference_us()
    # Peak before the cycle phase: it copies the state once more for the read model's figure.
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cycle_phase(bench, now, policy, cell.decisions, result)
    result.reference_us = min(result.reference_us, reference_us())
    result.peak_mb = peak_kb / 1024 if sys.platform != "darwin" else peak_kb / 1024 / 1024
    return result


def run_isolated(cell: Cell) -> Result:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_cell, cell).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relaydesk bench decide", description=described(__doc__))
    parser.add_argument("--quick", action="store_true", help="a smaller grid (100/1,000 agents x 1,000/10,000 waiting)")
    parser.add_argument("--agents", type=positive, nargs="+", help="agent counts (default 100 1000 10000)")
    parser.add_argument("--waiting", type=at_least(0), nargs="+", help="waiting counts (default 1000 100000)")
    parser.add_argument(
        "--decisions", type=positive, default=None, help="timed decide calls per situation (default 2000)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the random roster and queue (default 7)")
    parser.add_argument("--json", metavar="FILE", type=output_file, help="also write the figures as JSON")
    parser.add_argument(
        "--in-process", action="store_true", help="run cells in this process (peak memory then accumulates)"
    )
    args = parser.parse_args(argv)

    agents = args.agents or ([100, 1000] if args.quick else [100, 1000, 10_000])
    waiting = args.waiting or ([1000, 10_000] if args.quick else [1000, 100_000])
    decisions = args.decisions or (500 if args.quick else 2000)
    print(
        "CPU µs per decide call. freed: medians and p99 over calls that routed (made an offer or "
        "assignment); 'all med' is the median over every timed call"
    )
    print(
        f"{'agents':>7} {'waiting':>8} {'queues':>6} | {'freed med µs':>12} {'before':>7} {'p99 µs':>8} "
        f"{'routed':>11} {'all med µs':>10} | {'arrival med µs':>14} {'p99 µs':>8} | {'peak MB':>8} {'build s':>7}"
    )
    results: list[Result] = []
    for n_agents in agents:
        for n_waiting in waiting:
            cell = Cell(agents=n_agents, waiting=n_waiting, decisions=decisions, seed=args.seed)
            result = run_cell(cell) if args.in_process else run_isolated(cell)
            results.append(result)
            routed = f"{result.freed_routed}/{result.freed_calls}"
            print(
                f"{n_agents:>7} {n_waiting:>8} {result.queues:>6} | {result.freed_median_us:>12.1f} "
                f"{before_figure(cell, 'freed_median_us'):>7} {result.freed_p99_us:>8.1f} {routed:>11} "
                f"{result.freed_all_median_us:>10.1f} | {result.arrival_median_us:>14.1f} "
                f"{result.arrival_p99_us:>8.1f} | {result.peak_mb:>8.1f} {result.build_s:>7.1f}",
                flush=True,
            )
    for n_waiting in waiting:
        row = [r for r in results if r.cell.waiting == n_waiting]
        if len(row) > 1 and row[0].freed_median_us > 0:
            growth = row[-1].freed_median_us / row[0].freed_median_us
            print(
                f"growth of the freed (routed) median from {row[0].cell.agents} to {row[-1].cell.agents} agents "
                f"at {n_waiting} waiting: {growth:.2f}x"
            )
    report(results)
    if args.json:
        payload = {
            "bench": "decide",
            "target_all_in_us": TARGET_ALL_IN_US,
            "before_10k_100k": {**BEFORE_10K_100K, "fold_by_type_us": BEFORE_FOLD_US},
            "cells": [asdict(r) for r in results],
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
