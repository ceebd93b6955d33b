"""``relaydesk simulate SCENARIO.toml``: the router and the baselines through a simulated day.

Prints a table per policy (and service level per channel), writes the figures as JSON and,
with matplotlib, a PNG chart (service level and queue length per hour per policy).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from services.simulator import charts
from services.simulator.runner import run
from services.simulator.scenario import POLICIES, Scenario, ScenarioError, check_simulation, load

LEGEND = (
    "SL: answered within the channel's target (abandoned: missed); SL right agent: by an agent with the skill "
    "and the language; ASA: mean wait of answered; skill/lang.: the first agent had them; VIP SL: SL of gold, "
    "platinum and flagged customers; occup. ±: mean busy share on shift ± its spread over agents (fairness); "
    "spec. front: specialists' (tier >= 2) work time on standard customers."
)
CHARTS_HINT = (
    "no chart: matplotlib is not installed (pip install matplotlib, or reinstall relaydesk); figures are in the JSON"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO.toml", help="e.g. services/simulator/scenarios/retail.toml")
    parser.add_argument("--seed", type=int, help="override [simulation] seed")
    parser.add_argument("--hours", type=float, help="override [simulation] hours")
    parser.add_argument("--policies", help=f"comma-separated, of {', '.join(POLICIES)} (default: the scenario's)")
    parser.add_argument("--out", metavar="DIR", default="simulation", help="where NAME.json and NAME.png go")
    parser.add_argument("--no-chart", action="store_true", help="write no PNG")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")


def _overridden(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    changes: dict[str, Any] = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.hours is not None:
        changes["hours"] = args.hours
    if args.policies:
        names = tuple(p.strip() for p in args.policies.split(",") if p.strip())
        unknown = [n for n in names if n not in POLICIES]
        if unknown:
            raise ScenarioError(f"unknown policy {', '.join(unknown)} (known: {', '.join(POLICIES)})")
        changes["policies"] = names
    if not changes:
        return scenario
    simulation = msgspec.structs.replace(scenario.simulation, **changes)
    check_simulation(simulation)
    return msgspec.structs.replace(scenario, simulation=simulation)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} s" if value < 600 else f"{value / 60:.0f} min"


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    title = (
        f"{result['scenario']}: {result['arrivals']} arrivals over {result['hours']:g} h, "
        f"{result['agents']} agents, seed {result['seed']}"
    )
    table = Table(title=title)
    headers = (
        "policy",
        "SL",
        "SL right agent",
        "ASA",
        "aband.",
        "skill",
        "lang.",
        "transf.",
        "VIP ASA",
        "occup. ±",
        "spec. front",
    )
    for header in headers:
        table.add_column(header, justify="left" if header == "policy" else "right")
    for name, s in result["policies"].items():
        table.add_row(
            name,
            _pct(s["service_level"]),
            _pct(s["right_agent_service_level"]),
            _secs(s["asa_seconds"]),
            _pct(s["abandonment"]),
            _pct(s["skill_match"]),
            _pct(s["language_match"]),
            str(s["transfers"]),
            _pct(s["vip_service_level"]),
            f"{_pct(s['occupancy_mean'])} ±{_pct(s['occupancy_spread'])}",
            _pct(s["specialist_frontline_share"]),
        )
    console.print(table)
    channels = Table(title="service level per channel (answered within the channel's target)")
    channels.add_column("policy")
    names = sorted(next(iter(result["policies"].values()))["channels"]) if result["policies"] else []
    for channel in names:
        channels.add_column(channel, justify="right")
    for name, s in result["policies"].items():
        cells = [
            f"{_pct(c['service_level'])} · {_secs(c['asa_seconds'])} · {_pct(c['abandonment'])} ab."
            for c in (s["channels"][ch] for ch in names)
        ]
        channels.add_row(name, *cells)
    console.print(channels)
    console.print(LEGEND)


def main(args: argparse.Namespace) -> int:
    try:
        scenario = _overridden(load(Path(args.scenario)), args)
    except (OSError, ScenarioError, ValueError) as exc:
        print(f"relaydesk simulate: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    stem = Path(args.scenario).stem
    json_path = out / f"{stem}.json"
    try:  # before the run: a --out that is a file or not writable was a traceback after it
        out.mkdir(parents=True, exist_ok=True)
        json_path.open("a").close()
    except OSError as exc:
        print(f"relaydesk simulate: cannot write to --out {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    result = run(scenario)
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print_table(result)
        print(f"figures: {json_path}")
    if not args.no_chart:
        if charts.available():
            written = charts.write(result, out / f"{stem}.png")
            print(f"chart: {written}", file=sys.stderr if args.json else sys.stdout)
        else:
            print(CHARTS_HINT, file=sys.stderr)
    return 0
