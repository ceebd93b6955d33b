"""What ``relaydesk bench route`` measured (``RunFigures``) and how it prints it: the table
beside the ceiling, and the CPU budget that explains the ratio."""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
RATES = (100, 500, 1000)


@dataclass
class RateFigures:
    rate: int
    sent: int
    offered: int
    p50_ms: float | None
    p99_ms: float | None
    # The same, up to intake's MessageReceived on the log: the rest is the router's decision.
    intake_p50_ms: float | None = None
    intake_p99_ms: float | None = None


@dataclass
class RunFigures:
    intakes: int
    saturation_per_s: float | None = None
    saturation_offered: int = 0
    saturation_sent: int = 0
    ceiling_msgs_per_s: float = 0.0  # the bare loop on the same server, just before
    # CPU per message of the bare loop (its client, and the server serving it)
    ceiling_client_cpu_ms: float | None = None
    ceiling_server_cpu_ms: float | None = None
    intake_cpu_ms: float | None = None  # CPU of the intake processes per conversation at saturation
    router_cpu_ms: float | None = None
    server_cpu_ms: float | None = None  # the nats-server's, per conversation at saturation
    rates: list[RateFigures] = field(default_factory=list)


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def report(runs: list[RunFigures], args: argparse.Namespace) -> dict[str, Any]:
    print()
    print("ceiling: bare fetch + conditional append, pipelined, msg/s on the same server just before")
    header = (
        f"{'intakes':>7} | {'ceiling':>7} | {'conv/s':>7} | {'× ceiling':>9} | {'CPU ms/conv':>14} | "
        + " | ".join(f"{r}/s p50 / p99 ms".rjust(20) for r in RATES)
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        ceiling = run.ceiling_msgs_per_s
        ratio = run.saturation_per_s / ceiling if run.saturation_per_s and ceiling else None
        cells = " | ".join(
            f"{fmt(f.p50_ms, '.1f')} / {fmt(f.p99_ms, '.1f')}{'' if f.offered == f.sent else '*'}".rjust(20)
            for f in run.rates
        )
        cpu = f"{fmt(run.intake_cpu_ms, '.2f')} + {fmt(run.router_cpu_ms, '.2f')}"
        rate = fmt(run.saturation_per_s, ",.0f")
        print(f"{run.intakes:>7} | {ceiling:>7,.0f} | {rate:>7} | {fmt(ratio, '.3f'):>9} | {cpu:>14} | {cells}")
    print(f"targets: ≥ {TARGET_RATIO} × ceiling; p99 < {TARGET_P99_MS:.0f} ms at 500/s   (* not every message offered)")
    print("CPU ms/conv: intake processes + router, at saturation")
    print_cpu_budget(runs)
    return {
        "benchmark": "route",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "settings": {"messages": args.messages, "seconds": args.seconds, "agents": args.agents},
        "targets": {"ratio": TARGET_RATIO, "p99_ms_at_500": TARGET_P99_MS},
        "runs": [
            {**asdict(run), "ratio": run.saturation_per_s / run.ceiling_msgs_per_s if run.saturation_per_s else None}
            for run in runs
        ],
    }


def print_cpu_budget(runs: list[RunFigures]) -> None:
    """What a unit of work costs in CPU, client and server together, and how many units the
    machine's cores could do at that cost: where the rates are CPU-bound, their ratio follows."""
    cores = os.cpu_count() or 1
    print()
    print(f"CPU per unit at saturation, ms: clients + nats-server = all; what {cores} cores allow at that cost")
    header = f"{'':<36} | {'clients':>13} | {'server':>6} | {'all':>6} | {'cores allow/s':>13}"
    print(header)
    print("-" * len(header))
    for run in runs:
        ceiling = f"ceiling, per message ({run.intakes} intake run)"
        rows = [
            (ceiling, [run.ceiling_client_cpu_ms], run.ceiling_server_cpu_ms),
            (f"{run.intakes} intake, per conversation", [run.intake_cpu_ms, run.router_cpu_ms], run.server_cpu_ms),
        ]
        for label, clients, server in rows:
            if server is None or any(c is None for c in clients):
                continue
            known = [c for c in clients if c is not None]
            total = sum(known) + server
            shown = " + ".join(f"{c:.2f}" for c in known)
            allow = f"{1000 * cores / total:,.0f}" if total > 0 else "—"
            print(f"{label:<36} | {shown:>13} | {server:>6.2f} | {total:>6.2f} | {allow:>13}")
