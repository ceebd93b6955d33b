"""``relaydesk customers import FILE | link CUSTOMER IDENTITY | merge SURVIVOR OTHER``.

These talk to NATS directly (like ``relaydesk rebuild``), not to the API: set
``RELAYDESK_NATS_URL`` or ``--nats-url``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from events import subjects
from events.store import EventStore
from events.streams import streams_exist
from services.bootstrap import connect_for_tool
from services.config import Config
from services.customers.importer import FileError, LineError, import_file
from services.customers.service import CustomerError, Customers
from services.identity import IdentityDirectory, IdentityRules

HELP = """\
Customers, straight on the event log (needs RELAYDESK_NATS_URL or --nats-url):

  relaydesk customers import FILE [--dry-run]     CSV or JSON Lines: identity/identities, tier, flags,
                                                  preferred_language, crm_id; bad lines are reported
                                                  by number, the others imported; re-running changes nothing
  relaydesk customers link CUSTOMER IDENTITY [--merge]
  relaydesk customers merge SURVIVOR OTHER        OTHER is merged into SURVIVOR
"""


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = sub.add_parser(
        "customers",
        help="import customers from CSV / JSON Lines, link an address, merge two customers",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = actions.add_parser("import", help="import customers from a CSV or JSON Lines file")
    common(imp)
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--dry-run", action="store_true", help="check every line and say what would change; write nothing")
    imp.add_argument("--format", choices=("csv", "jsonl"), help="default: by the file name, else by its content")
    imp.add_argument("--concurrency", type=int, default=8, metavar="N", help="lines imported side by side (default 8)")
    link = actions.add_parser("link", help="give an address to a customer")
    common(link)
    link.add_argument("customer", metavar="CUSTOMER")
    link.add_argument("identity", metavar="IDENTITY", help="e.g. email:ann@example.com or sms:+15551234567")
    link.add_argument("--merge", action="store_true", help="if another customer has the address, merge it in")
    merge = actions.add_parser("merge", help="merge OTHER into SURVIVOR")
    common(merge)
    merge.add_argument("survivor", metavar="SURVIVOR")
    merge.add_argument("other", metavar="OTHER")


@asynccontextmanager
async def _customers(config: Config) -> AsyncIterator[Customers]:
    url = config.nats.url
    try:
        nc = await connect_for_tool(url)
    except Exception as err:
        raise SystemExit(f"relaydesk customers: cannot connect to NATS at {url}: {err}") from err
    try:
        js = nc.jetstream()
        if not await streams_exist(js):
            raise SystemExit(f"relaydesk customers: no Relaydesk event log on {url} (run relaydesk up first)")
        kv = await js.key_value(subjects.IDENTITY_BUCKET)
        directory = IdentityDirectory(kv, IdentityRules.from_settings(config.intake))
        yield Customers(EventStore(nc, js), directory, config.router)
    finally:
        await nc.drain()


def customers_command(args: argparse.Namespace, config: Config) -> int:
    if not config.nats.url:
        raise SystemExit("relaydesk customers: set RELAYDESK_NATS_URL or --nats-url")
    if args.action == "import":
        return asyncio.run(
            run_import(config, Path(args.file), dry_run=args.dry_run, fmt=args.format, concurrency=args.concurrency)
        )
    return asyncio.run(_operator_action(config, args))


async def _operator_action(config: Config, args: argparse.Namespace) -> int:
    console = Console(soft_wrap=True, highlight=False)
    async with _customers(config) as customers:
        try:
            if args.action == "link":
                result = await customers.link(args.customer, args.identity, "cli", merge=args.merge)
                what = "linked" if result["linked"] else "already linked"
                merged = f" (merged {result['merged']} in)" if result["merged"] else ""
                console.print(f"{result['identity']}: {what} to {result['customer_id']}{merged}")
            else:
                result = await customers.merge(args.survivor, args.other, "cli")
                moved = len(result["identities_moved"])
                console.print(f"merged {result['merged_id']} into {result['customer_id']} ({moved} addresses moved)")
        except CustomerError as err:
            console.print(f"[red]refused ({err.status}): {err.reason}")
            return 1
    return 0


async def run_import(
    config: Config,
    path: Path,
    *,
    dry_run: bool = False,
    fmt: Any = None,
    progress: bool | None = None,
    concurrency: int = 8,
) -> int:
    """Import ``path``; print every bad line (by number) and a summary. Exit code 1 when any
    line failed, 2 when the file could not be read at all."""
    out = Console(stderr=True, soft_wrap=True)
    show = sys.stderr.isatty() if progress is None else progress
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=out,
        disable=not show,
    )

    def on_error(error: LineError) -> None:
        bar.console.print(f"[red]line {error.line}[/red]: {error.reason}", markup=True, highlight=False)

    async with _customers(config) as customers:
        try:
            with bar:
                report = await import_file(
                    path, customers, dry_run=dry_run, fmt=fmt, progress=bar, on_error=on_error, concurrency=concurrency
                )
        except FileError as err:
            out.print(f"[red]relaydesk customers import: {err}")
            return 2
    if report.ignored_columns:
        out.print(f"ignored columns: {', '.join(report.ignored_columns)}")
    prefix = "dry run, nothing written: " if dry_run else ""
    out.print(prefix + report.summary(), highlight=False)
    if report.errors:
        numbers = [str(e.line) for e in report.errors]
        more = f" and {len(numbers) - 30} more" if len(numbers) > 30 else ""
        out.print(f"[red]{len(numbers)} lines failed:[/red] " + ", ".join(numbers[:30]) + more, highlight=False)
        return 1
    return 0
