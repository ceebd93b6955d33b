"""``relaydesk bench rebuild``: ``rebuild timelines`` against the ordered-replay ceiling.

Writes an N-event log (default 1,000,000; ``rebuild_log``) into a throw-away nats-server: customers with a few
conversations each, every conversation opened, a message in, routed, offered, accepted,
assigned, replied to and sent, sometimes a second exchange, resolved; personal data sealed
with a per-customer key as in production. Then, each in a fresh Python process started for
it (so imports and peak RSS are its own, as for ``relaydesk rebuild``):

- ceiling: an ordered consumer over ``rd.evt.c.>``, every message counted and dropped, read
  three ways (``events.replay``'s reader on the whole stream, the same through the wildcard
  filter, nats-py's ordered consumer); the best is the ceiling;
- replay + open: the batched replay the rebuild reads with, decoded and opened, then dropped;
- SQLite: ``rebuild_timelines`` into a fresh file (reading here, folding and writing in its
  writer process: ``services.timelines.bulk``);
- PostgreSQL: the same into a fresh schema (skipped, with the reason, when no server answers:
  ``--pg-dsn``, default ``RELAYDESK_TEST_PG_DSN`` or ``postgresql://postgres@127.0.0.1:5432/test``).

Each line gives events/s over the process's whole life (start, imports, connect, work) and
over the work alone, the ratio of the latter to the ceiling's, the CPU per event of the work
in every process of the stage (the writer process's included; the NATS and database servers'
not), for a rebuild also split as read/write (the reader's; the writer process's, its imports
included: the larger bounds the rate when each has a core of its own), and the peak RSS of the
largest process. Rates on a shared machine are noisy: read the ratio and the CPU per event. A
benchmark, not a test: it asserts nothing.
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
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from events.skips import skipping
from services.bench.args import described, output_file, positive
from services.bench.rebuild_log import write_log

TARGETS = {"sqlite": 50_000.0, "postgresql": 30_000.0}
CEILING_SHARE = 0.30
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Stage:
    name: str
    events: int = 0
    wall_s: float = 0.0  # the whole child process: start, imports, connect, work
    work_s: float = 0.0  # the work alone
    peak_rss_mb: float = 0.0  # the largest process of the stage (the writer process's own, if larger)
    cpu_s: float = 0.0  # CPU of the work, in every process of the stage (not the NATS or database server)
    writer_cpu_s: float = 0.0  # of which the rebuild's writer process (its whole life, imports and all)
    skipped: str | None = None

    @property
    def cpu_us_per_event(self) -> float:
        """The noise-proof figure: CPU per event does not depend on what else the machine runs."""
        return self.cpu_s / self.events * 1e6 if self.events else 0.0

    @property
    def split(self) -> str:
        """Reader/writer CPU per event of a rebuild (which process bounds it), else ""."""
        if not self.events or not self.writer_cpu_s:
            return ""
        writer = self.writer_cpu_s / self.events * 1e6
        return f"{self.cpu_us_per_event - writer:.1f}/{writer:.1f}"

    @property
    def rate(self) -> float:
        return self.events / self.work_s if self.work_s > 0 else 0.0

    @property
    def rate_all_in(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0


# -- the log --------------------------------------------------------------------------------


# -- the stages (each in its own process) -------------------------------------------------


async def run_stage(stage: str, url: str, target: str, schema: str | None) -> dict[str, Any]:
    import nats

    from events import subjects
    from events.personal import CustomerKeys, PersonalDataCipher
    from events.store import EventStore

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        store = EventStore(nc, js, timeout=30.0, reader="rebuild", cipher=PersonalDataCipher(CustomerKeys(js)))
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        if stage == "ceiling":
            from events.replay import replay_discard

            # the customer events, read as the whole stream (the server's fastest; see events.replay)
            events = await replay_discard(store, subjects.EVENTS_ALL, count_only="rd.evt.c.")
        elif stage == "ceiling-filtered":
            from events.replay import replay_discard

            events = await replay_discard(store, subjects.CUSTOMER_EVENTS_ALL)
        elif stage == "ceiling-nats-py":
            from events.replay import replay_discard

            events = await replay_discard(store, subjects.EVENTS_ALL, count_only="rd.evt.c.", client="nats-py")
        elif stage == "replay":
            from events.replay import bulk_gc, replay_batches

            events = 0
            with bulk_gc():  # as the rebuild reads
                async for chunk in replay_batches(store, subjects.CUSTOMER_EVENTS_ALL, 1):
                    events += len(chunk)
        else:
            from services.rebuild import rebuild_timelines

            result = await rebuild_timelines(store, target, progress=False, schema=schema)
            events = result.events
        work = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await nc.drain()
    writer = resource.getrusage(resource.RUSAGE_CHILDREN)  # the rebuild's writer process, once it has exited
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) + writer.ru_utime + writer.ru_stime
    peak = max(after.ru_maxrss, writer.ru_maxrss) / 1024
    writer_cpu = writer.ru_utime + writer.ru_stime
    return {"events": events, "work_s": work, "peak_rss_mb": peak, "cpu_s": cpu, "writer_cpu_s": writer_cpu}


def child(stage: str, url: str, target: str = "", schema: str | None = None) -> Stage:
    args = [sys.executable, "-m", "services.bench.rebuild", "--stage", stage, "--nats-url", url, "--target", target]
    if schema:
        args += ["--schema", schema]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        return Stage(stage, skipped=f"failed: {said[-1] if said else done.returncode}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return Stage(
        stage,
        events=out["events"],
        wall_s=wall,
        work_s=out["work_s"],
        peak_rss_mb=out["peak_rss_mb"],
        cpu_s=out.get("cpu_s", 0.0),
        writer_cpu_s=out.get("writer_cpu_s", 0.0),
    )


def pg_answers(dsn: str) -> str | None:
    """None when PostgreSQL answers at ``dsn``, else why not."""
    if not dsn.strip():
        return "--pg-dsn is empty"
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        return f"no PostgreSQL at {dsn}: {' '.join(str(err).split())}"
    return None


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for suffix in ("", "__next"):
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}{suffix}" CASCADE')


def bench(events: int, pg_dsn: str, rounds: int) -> tuple[list[Stage], dict[str, Any]]:
    from services.bus.embedded import EmbeddedNats

    stages: list[Stage] = []
    about: dict[str, Any] = {"events_requested": events, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory(prefix="relaydesk-bench-rebuild-") as tmp:
        server = EmbeddedNats(store_dir=Path(tmp) / "js")
        server.start()
        try:
            written, seconds = asyncio.run(write_log(server.url, events))
            about.update(events_in_log=written, write_s=round(seconds, 2))
            why_no_pg = pg_answers(pg_dsn)
            about["postgresql"] = why_no_pg or pg_dsn
            for round_ in range(rounds):
                # The ceiling and each rebuild take turns, so each sees the same moment of the machine.
                stages.append(child("ceiling", server.url))
                stages.append(child("ceiling-filtered", server.url))
                stages.append(child("ceiling-nats-py", server.url))
                stages.append(child("replay", server.url))
                stages.append(child("sqlite", server.url, str(Path(tmp) / f"timelines{round_}.db")))
                if why_no_pg:
                    stages.append(Stage("postgresql", skipped=why_no_pg))
                else:
                    schema = f"bench_rebuild_{uuid.uuid4().hex[:8]}"
                    try:
                        stages.append(child("postgresql", server.url, pg_dsn, schema))
                    finally:
                        with skipping("bench.drop_schema", schema=schema):
                            drop_schema(pg_dsn, schema)
        finally:
            server.stop()
    return stages, about


def report(stages: list[Stage], about: dict[str, Any]) -> dict[str, Any]:
    ceilings = [s.rate for s in stages if s.name.startswith("ceiling") and not s.skipped]
    ceiling = max(ceilings) if ceilings else 0.0
    # The bare nats-py loop (an ordered consumer) beside the best: the target is judged against
    # the best, the stricter; the other column says how the work stands to plain nats-py.
    bare = next((s.rate for s in stages if s.name == "ceiling-nats-py" and not s.skipped), 0.0)
    print(
        f"\nlog: {about.get('events_in_log', 0):,} customer events (written in {about.get('write_s')} s); "
        f"ceiling = ordered replay, discard: {ceiling:,.0f} ev/s (best of {len(ceilings)}); "
        f"nats-py's ordered consumer alone: {bare:,.0f} ev/s"
    )
    print(
        f"{'stage':<17}{'events/s':>10}{'all-in ev/s':>13}{'of ceiling':>12}{'of nats-py':>12}{'CPU us/ev':>11}"
        f"{'read/write':>12}{'peak RSS MB':>13}  target"
    )
    rows: list[dict[str, Any]] = []
    for s in stages:
        if s.skipped:
            print(f"{s.name:<17}  skipped: {s.skipped}")
            rows.append({"stage": s.name, "skipped": s.skipped})
            continue
        share = s.rate / ceiling if ceiling else 0.0
        of_bare = s.rate / bare if bare else 0.0
        target = TARGETS.get(s.name)
        verdict = ""
        if target is not None:
            ok = s.rate >= target and share >= CEILING_SHARE
            verdict = f"{'met' if ok else 'NOT met'} (>= {target:,.0f}/s and >= {CEILING_SHARE:.0%} of the ceiling)"
        print(
            f"{s.name:<17}{s.rate:>10,.0f}{s.rate_all_in:>13,.0f}{share:>12.2f}{of_bare:>12.2f}{s.cpu_us_per_event:>11.1f}"
            f"{s.split:>12}{s.peak_rss_mb:>13,.0f}  {verdict}"
        )
        rows.append(
            {
                **asdict(s),
                "rate": round(s.rate),
                "rate_all_in": round(s.rate_all_in),
                "share_of_ceiling": round(share, 3),
                "share_of_nats_py_replay": round(of_bare, 3),
                "cpu_us_per_event": round(s.cpu_us_per_event, 2),
                "target": target,
            }
        )
    return {"about": about, "ceiling": round(ceiling), "nats_py_replay": round(bare), "stages": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relaydesk bench rebuild", description=described(__doc__))
    parser.add_argument("--events", type=positive, default=1_000_000, help="events in the log (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 events, one round")
    parser.add_argument("--rounds", type=positive, default=1, help="times each stage runs (default 1)")
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("RELAYDESK_TEST_PG_DSN", DEFAULT_PG),
        help=f"PostgreSQL to rebuild into (default: RELAYDESK_TEST_PG_DSN, else {DEFAULT_PG}); "
        "'' skips PostgreSQL, as does a server that does not answer",
    )
    parser.add_argument("--json", metavar="FILE", type=output_file, help="write the figures as JSON")
    # internal: one stage in this process
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    parser.add_argument("--target", default="", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from services import logs

    logs.configure("warning")  # info lines of the stages would bury the table
    if args.stage:
        out = asyncio.run(run_stage(args.stage, args.nats_url, args.target, args.schema))
        print(json.dumps(out))
        return 0
    events = 100_000 if args.quick else args.events
    stages, about = bench(events, args.pg_dsn, 1 if args.quick else args.rounds)
    out = report(stages, about)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
