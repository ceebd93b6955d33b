"""``relaydesk status``: one look at a running deployment, for an operator.

NATS and its streams, every durable consumer's lag, who leads (router, delivery), agents
online and queue depths (the routing state: the newest snapshot of it, the router's or the
API's, plus at most ``FOLD_LIMIT`` events of the log after it), and the parked counts. A table
on a terminal, ``--json`` for scripts. Read-only: it connects as the tool role and appends nothing.

Bounded: everything but agents and queues is a handful of NATS requests; agents and queues
come from ``services.status.routing`` (at most ``FOLD_LIMIT`` events folded, and why not all
said; ``--fold-all`` folds whatever it takes, with a progress line).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError, NotFoundError
from rich.console import Console
from rich.table import Table

from events import subjects
from events.parking import ParkingLot
from events.streams import stream_drift
from services.bootstrap import stream_settings
from services.bus.connection import let_go
from services.config import Config
from services.lease import LeaseValue
from services.progress import ShowProgress
from services.status.routing import FOLD_LIMIT, routing_state, routing_summary

log = structlog.get_logger(__name__)

STATUS_HELP = """\
Is NATS reachable; each stream's messages; each durable consumer's pending, unacknowledged
and redelivered counts; who leads (router, delivery) and until when; agents by status; the
waiting conversations per queue with the oldest wait; parked messages (dead letters,
quarantined events). Agents and queues come from the newest snapshot of the routing state
(the router's or the API's) and at most 100,000 events after it: with none on a longer log
they are not shown (--fold-all folds the whole log). Exits 1 when NATS cannot be reached.
"""

LEASES = ("router", "delivery")


async def _streams(nc: NATS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    js = nc.jetstream()
    streams: list[dict[str, Any]] = []
    consumers: list[dict[str, Any]] = []
    for info in sorted(await js.streams_info(), key=lambda i: i.config.name or ""):
        name = info.config.name or ""
        if name.startswith(("KV_", "OBJ_")):
            continue  # buckets: not streams an operator reads
        streams.append(
            {
                "stream": name,
                "messages": info.state.messages,
                "bytes": info.state.bytes,
                "last_seq": info.state.last_seq,
                "replicas": info.config.num_replicas or 1,
            }
        )
        try:
            infos = await js.consumers_info(name)
        except NotFoundError:
            infos = []
        for c in sorted(infos, key=lambda c: c.name):
            if not c.config.durable_name:
                continue  # ordered/ephemeral readers come and go
            consumers.append(
                {
                    "stream": name,
                    "consumer": c.name,
                    "pending": c.num_pending or 0,
                    "ack_pending": c.num_ack_pending or 0,
                    "redelivered": c.num_redelivered or 0,
                    "max_deliver": c.config.max_deliver,
                }
            )
    return streams, consumers


async def _leaders(nc: NATS, now: float) -> dict[str, dict[str, Any]]:
    """Each lease's holder and whether it is still current (a lapsed lease: nobody leads)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    except NotFoundError:
        return {name: {"holder": None, "current": False} for name in LEASES}
    for name in LEASES:
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            out[name] = {"holder": None, "current": False}
            continue
        try:
            value = msgspec.json.decode(entry.value or b"", type=LeaseValue)
        except msgspec.DecodeError as err:
            log.warning("status.lease_unreadable", lease=name, error=str(err))
            out[name] = {"holder": None, "current": False, "error": "unreadable lease value"}
            continue
        out[name] = {
            "holder": value.holder,
            "current": value.expires > now,
            "expires_in_s": round(value.expires - now, 1),
        }
    return out


async def status(
    nc: NATS, config: Config | None = None, *, fold_all: bool = False, progress: ShowProgress = False
) -> dict[str, Any]:
    """Everything ``relaydesk status`` shows, as one JSON-friendly report. ``fold_all``: fold
    the whole log after the newest snapshot, however long (``progress``: how to show it)."""
    config = config or Config()
    streams, consumers = await _streams(nc)
    js = nc.jetstream()
    server = nc.connected_server_version
    return {
        "nats": {
            "reachable": True,
            "url": str(nc.connected_url.geturl()) if nc.connected_url else "",
            "server_version": f"{server.major}.{server.minor}.{server.patch}",
        },
        "streams": streams,
        "consumers": consumers,
        "leaders": await _leaders(nc, time.time()),
        "routing": routing_summary(
            await routing_state(nc, limit=sys.maxsize if fold_all else None, progress=progress),
            config,
            datetime.now(UTC),
        ),
        "parked": await ParkingLot(js).counts(),
        # Streams and buckets that differ from the wanted config ([nats] replicas, …).
        "drift": [d.as_dict() for d in await stream_drift(js, stream_settings(config))],
    }


def add_parser(sub: Any, common: Any) -> None:
    st = sub.add_parser(
        "status",
        help="NATS, streams, consumer lag, leaders, agents, queues, parked counts",
        description=STATUS_HELP,  # one paragraph, wrapped to the terminal (as the NATS options' text)
    )
    common(st)
    st.add_argument("--json", action="store_true", help="print JSON")
    st.add_argument(
        "--fold-all",
        action="store_true",
        help=f"fold every event after the newest snapshot for agents and queues, however many"
        f" (default: at most {FOLD_LIMIT:,}; a progress line on stderr)",
    )


def status_command(args: argparse.Namespace, config: Config) -> int:
    if not config.nats.url:
        raise SystemExit("relaydesk status: set RELAYDESK_NATS_URL or --nats-url (or run beside `relaydesk up`)")
    return asyncio.run(_status(config, as_json=args.json, fold_all=args.fold_all))


async def _status(config: Config, *, as_json: bool, fold_all: bool = False) -> int:
    from services.bootstrap import connect_for_tool

    url = config.nats.url
    try:
        nc = await connect_for_tool(url, config)
    except Exception as err:
        if as_json:
            print(msgspec.json.encode({"nats": {"reachable": False, "url": url, "error": str(err)}}).decode())
        else:
            print(f"NATS at {url}: not reachable ({err})", file=sys.stderr)
        return 1
    try:
        progress: ShowProgress = (True if sys.stderr.isatty() else "lines") if fold_all else False
        report = await status(nc, config, fold_all=fold_all, progress=progress)
    finally:
        await let_go(nc)
    if as_json:
        print(msgspec.json.encode(report).decode())
    else:
        print_report(report, Console(soft_wrap=True, highlight=False, markup=False))  # names as they are
    return 0


def _table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 or name in ("CONSUMER", "HOLDER", "QUEUE") else "right")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table


def _queue_name(q: dict[str, Any]) -> str:
    """What sets a queue apart: the same channel, skills and language at another escalation
    step (its requirements relaxed, other languages accepted) is another queue."""
    skills = "+".join(f"{name}>={level}" for name, level in sorted(q["skills"].items())) or "any skill"
    language = q["language"] or "any language"
    accepted = q.get("languages")
    if accepted and list(accepted) != [q["language"]]:
        language += f" (or {', '.join(lang for lang in accepted if lang != q['language'])})"
    step = f" step {q['step']}" if q.get("step") else ""
    return f"{q['channel']} {skills} {language} tier>={q['min_tier']} {q['customer_tier']}{step}"


def print_report(report: dict[str, Any], out: Console) -> None:
    n = report["nats"]
    out.print(f"NATS {n['url']}: reachable (server {n['server_version']})\n")
    streams = [(s["stream"], s["messages"], s["bytes"], s["last_seq"], s["replicas"]) for s in report["streams"]]
    out.print(_table("Streams", ("STREAM", "MESSAGES", "BYTES", "LAST SEQ", "REPLICAS"), streams))
    consumers = [
        (c["stream"], c["consumer"], c["pending"], c["ack_pending"], c["redelivered"], c["max_deliver"])
        for c in report["consumers"]
    ]
    out.print("")
    if consumers:
        header = ("STREAM", "CONSUMER", "PENDING", "ACK PENDING", "REDELIVERED", "MAX DELIVER")
        out.print(_table("Consumers", header, consumers))
    else:
        out.print("no durable consumers yet")
    leaders = [
        (name, lead.get("holder") or "-", "yes" if lead.get("current") else "no (lapsed or never taken)")
        for name, lead in report["leaders"].items()
    ]
    out.print("")
    out.print(_table("Leaders", ("LEASE", "HOLDER", "CURRENT"), leaders))
    routing = report["routing"]
    if routing["agents"] is None:
        out.print(f"\nAgents and queues: not shown: {routing['note']}")
        queues = []
    else:
        agents = ", ".join(f"{n} {status}" for status, n in routing["agents"].items()) or "none"
        out.print(f"\nAgents: {routing['agents_online']} online ({agents})")
        queues = [
            (_queue_name(q), q["waiting"], round(q["oldest_wait_seconds"], 1), q["sla_breached"])
            for q in routing["queues"]
        ]
        source = f", {routing['source']} at {routing['snapshot_seq']}" if routing["snapshot_seq"] else ""
        out.print(f"Waiting: {routing['total_waiting']} (state folded to sequence {routing['folded_to_seq']}{source})")
        if routing["note"]:
            out.print(f"Note: {routing['note']}")
    if queues:
        out.print("")
        out.print(_table("Queues", ("QUEUE", "WAITING", "OLDEST WAIT S", "SLA BREACHED"), queues))
    drift = report.get("drift") or []
    if drift:
        rows = [(d["stream"], d["field"], d["old"], d["new"]) for d in drift]
        out.print("")
        out.print(_table("Drift from the wanted config (relaydesk setup fixes what NATS can change)",
                         ("STREAM", "FIELD", "IS", "WANTED"), rows))  # fmt: skip
    parked = report["parked"]
    out.print(
        f"\nParked: {parked.get('dead_letter', 0)} dead letters, {parked.get('quarantined', 0)} quarantined"
        " (relaydesk dlq list)"
    )
