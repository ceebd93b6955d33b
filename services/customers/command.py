"""``relaydesk customers import FILE | link CUSTOMER IDENTITY | unlink CUSTOMER IDENTITY |
merge SURVIVOR OTHER | export CUSTOMER [--out FILE] | erase CUSTOMER --reason TEXT |
erase-again [--dry-run] | migrate-identities``.

These talk to NATS directly (like ``relaydesk rebuild``), not to the API: set
``RELAYDESK_NATS_URL`` or ``--nats-url``; beside ``relaydesk up`` (the same data dir), its
embedded NATS is found. Their options and ``--help`` are ``command_parser.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from nats.js.errors import BucketNotFoundError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from events import subjects
from events.personal import CustomerKeys
from events.streams import streams_exist
from services.api.registry import known_channels
from services.bootstrap import connect_for_tool, event_store
from services.bus.connection import let_go
from services.config import Config
from services.customers.erase import Eraser, ErasureTargets
from services.customers.export import export_customer
from services.customers.import_rows import FileError, LineError
from services.customers.importer import import_file
from services.customers.service import CustomerError, Customers
from services.customers.unlink import unlink
from services.identity import IdentityDirectory
from services.identity.addresses import IdentityRules
from services.identity.compaction import CompactionFailed, intake_reading, recreate_if_cut_short
from services.progress import LineTasks
from services.terminal_text import printable_json


@asynccontextmanager
async def _customers(config: Config, *, finishing_compaction: bool = False) -> AsyncIterator[Customers]:
    url = config.nats.url
    try:
        nc = await connect_for_tool(url, config)
    except Exception as err:
        raise SystemExit(f"relaydesk customers: cannot connect to NATS at {url}: {err}") from err
    try:
        js = nc.jetstream()
        if not await streams_exist(js):
            raise SystemExit(f"relaydesk customers: no Relaydesk event log on {url} (run relaydesk up first)")
        try:
            kv = await js.key_value(subjects.IDENTITY_BUCKET)
        except BucketNotFoundError:
            # A compaction cut short between the bucket's delete and its create: only finishing
            # it may recreate the bucket (an empty one would split every customer).
            found = await recreate_if_cut_short(js, subjects.IDENTITY_BUCKET) if finishing_compaction else None
            if found is None:
                raise SystemExit(
                    f"relaydesk customers: {subjects.IDENTITY_BUCKET} is missing on {url}; if a compaction was cut"
                    " short, `relaydesk customers migrate-identities --compact` finishes it"
                ) from None
            kv = found
        rules = IdentityRules.from_settings(config.intake, channels=known_channels(config))
        directory = IdentityDirectory(kv, rules)
        # Sealing and opening personal data like every service (events.personal).
        yield Customers(event_store(nc, config).for_reader("customers"), directory, config.router)
    finally:
        await let_go(nc)


def customers_command(args: argparse.Namespace, config: Config) -> int:
    from services.tool_runner import run_tool  # Ctrl-C and SIGTERM: one line saying what was left, 130 / 143

    if not config.nats.url:
        raise SystemExit("relaydesk customers: set RELAYDESK_NATS_URL or --nats-url (or run beside `relaydesk up`)")
    if args.action == "import":
        return run_tool(
            run_import(config, Path(args.file), dry_run=args.dry_run, fmt=args.format, concurrency=args.concurrency),
            interrupted="nothing was written (a dry run)"
            if args.dry_run
            else "the lines imported so far stay; run it again for the rest (lines already in change nothing)",
        )
    if args.action == "export":
        return run_tool(run_export(config, args.customer, args.out), interrupted="nothing was changed; run it again")
    if args.action == "erase":
        return run_tool(
            run_erase(config, args.customer, args.reason, assume_yes=args.yes),
            interrupted="if the erasure had begun, run the same command again to finish it (what is gone stays gone)",
        )
    if args.action == "erase-again":
        return run_tool(
            run_erase_again(config, dry_run=args.dry_run),
            interrupted="nothing was changed (a dry run)"
            if args.dry_run
            else "what was erased stays erased; run it again to finish (a customer cut short is finished then)",
        )
    if args.action == "migrate-identities":
        return run_tool(
            run_migrate_identities(config, compact=args.compact),
            # services/identity/compaction.py: cut short anywhere, the next run finishes it.
            interrupted="run it again to finish: cut short anywhere, the next run completes it (keep intake stopped)"
            if args.compact
            else "the mappings re-keyed so far stay re-keyed; run it again to finish",
        )
    return run_tool(
        _operator_action(config, args),
        interrupted="run the same command again to be sure it is done (it says so if it is)",
    )


def _confirmed(console: Console, customer_id: str) -> bool:
    if not sys.stdin.isatty():
        console.print("[red]relaydesk customers erase: not a terminal; pass --yes to erase without asking")
        return False
    console.print(
        f"This erases {customer_id} and every customer merged into it for good: their keys, addresses,"
        " raw messages, chat history and attachments. It cannot be undone."
    )
    return console.input(f"Type the customer id ({customer_id}) to go on: ").strip() == customer_id


async def run_export(config: Config, customer_id: str, out: str | None) -> int:
    """Export ``customer_id``'s family (``services.customers.export``) to ``out`` or stdout.
    Exit 1 when refused (unknown customer: 404 …), 2 when the file cannot be written."""
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    async with _customers(config) as customers:
        try:
            found = await export_customer(
                customers,
                customers.store.js,
                customer_id,
                "cli",
                now=datetime.now(UTC),
                targets=ErasureTargets.from_config(config),
            )
        except CustomerError as err:
            console.print(f"[red]refused ({err.status}): {escape(err.reason)}")
            return 1
    data = printable_json(msgspec.json.format(msgspec.json.encode(found.to_json()), indent=2)) + b"\n"
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    try:
        write_private(Path(out), data)
    except OSError as err:
        console.print(f"[red]cannot write {escape(out)}: {escape(str(err.strerror or err))}")
        return 2
    family, events = _count(len(found.customers), "customer"), _count(len(found.events), "event")
    console.print(escape(f"exported {found.customer_id} ({family}, {events}) to {out}"))
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("s") else f"{n} {noun}s"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` (personal data) to ``path``, readable by its owner only from the first byte.

    A new file is made beside it (0600, created, never opened if it existed) and renamed over
    ``path``: opening ``path`` itself kept the mode of a file already there (an earlier
    export's 0644 kept 0644: the permission asked at creation applies to new files only), and
    followed a symlink planted at it into a file its planter can read (found by a security
    audit). A path someone else owns in a sticky folder such as /tmp is refused (OSError)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


async def run_erase(config: Config, customer_id: str, reason: str, *, assume_yes: bool = False) -> int:
    """Erase ``customer_id`` (see ``services.customers.erase``): each step on the spinner as it
    ends, then what was removed. Exit 1 when refused (unknown customer: 404 …), 2 unconfirmed,
    3 erased but personal data in clear is left on the log (named)."""
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    if not assume_yes and not _confirmed(console, customer_id):
        return 2
    async with _customers(config) as customers:
        keys = customers.store.cipher.keys if customers.store.cipher is not None else CustomerKeys(customers.store.js)
        # Each step shows on the spinner as it ends; the counts are printed once, at the end.
        status = console.status(Text(f"erasing {customer_id}…"))
        eraser = Eraser(
            customers,
            keys,
            ErasureTargets.from_config(config),
            progress=lambda line: status.update(Text(f"erasing {customer_id}: {line}")),
        )
        try:
            with status:
                report = await eraser.erase(customer_id, reason, "cli")
        except CustomerError as err:
            console.print(f"[red]refused ({err.status}): {escape(err.reason)}")
            return 1
    family = ", ".join(report.erased_ids)
    console.print(
        f"[bold]erased {escape(report.customer_id)}[/bold] (with: {escape(family)})"
        if len(report.erased_ids) > 1
        else f"[bold]erased {escape(report.customer_id)}[/bold]"
    )
    if report.already_erased:
        console.print("it had been erased before: whatever was left was removed now")
    for label, count in (
        ("data keys destroyed", report.keys_destroyed),
        ("identity mappings erased", report.identity_mappings),
        ("raw messages erased (RD_INBOUND)", report.inbound_messages),
        ("web chat frames erased", report.chat_frames),
        ("attachments erased", report.attachments),
        ("files sent in replies erased", report.reply_files),
        ("queued replies erased (RD_OUTBOUND)", report.queued_replies),
        ("delivery records, dead letters purged", report.delivery_records),
        ("open conversations resolved", report.conversations_resolved),
    ):
        console.print(f"  {label:<34} {count}")
    console.print("timelines show the customer redacted once the projector has read the erasure")
    if report.left_in_clear:
        seqs = ", ".join(map(str, report.left_in_clear_seqs))
        console.print(
            f"[red]{report.left_in_clear} events on {subjects.EVENTS_STREAM} hold their personal data in clear"
            f" (written before sealing, or with encrypt_personal_data = false): no key erases them"
            f" (events {seqs}{', …' if report.left_in_clear > len(report.left_in_clear_seqs) else ''})."
            " See README: Erasure."
        )
        return 3
    return 0


async def run_erase_again(config: Config, *, dry_run: bool = False) -> int:
    """Erase again the erasures a restore of NATS undid (``services.customers.erase_again``),
    from the register in the timelines store. Exit 1 when one was refused, 3 when personal data
    in clear is left on the log (as ``erase``)."""
    from services.customers.erase_again import erase_again, read_register

    try:
        register = await read_register(config.projection_target)
    except Exception as err:
        raise SystemExit(f"relaydesk customers erase-again: cannot read the erasure register: {err}") from err
    async with _customers(config) as customers:
        report = await erase_again(
            customers,
            register,
            ErasureTargets.from_config(config),
            dry_run=dry_run,
            say=lambda line: print(line, flush=True),
        )
    if report.refused:
        return 1
    if report.left_in_clear:
        print(f"{report.left_in_clear} events hold personal data in clear on the log: see README, Erasure")
        return 3
    return 0


async def run_migrate_identities(config: Config, *, compact: bool = False) -> int:
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    async with _customers(config, finishing_compaction=compact) as customers:
        with console.status("re-keying rd_identity…"):
            moved = await customers.directory.migrate_all()
        console.print(f"{moved} identity mappings re-keyed (hashed); no key holds an address now")
        if compact:
            if waiting := await intake_reading(customers.directory.js):
                console.print(
                    f"[red]relaydesk customers: intake is running ({waiting} pull requests waiting on its consumer):"
                    " stop every intake process (and the API) first, then run this again"
                )
                return 1
            with console.status("rewriting rd_identity (cut short, run it again: nothing is lost)…"):
                try:
                    kept = await customers.directory.compact()
                except CompactionFailed as err:
                    console.print(f"[red]relaydesk customers: {escape(str(err))}")
                    return 1
            console.print(f"rd_identity rewritten: {kept} entries kept, the old files deleted")
    return 0


async def _operator_action(config: Config, args: argparse.Namespace) -> int:
    console = Console(soft_wrap=True, highlight=False)
    errors = Console(stderr=True, soft_wrap=True, highlight=False)  # a refusal is no output for a script
    async with _customers(config) as customers:
        try:
            if args.action == "link":
                result = await customers.link(args.customer, args.identity, "cli", merge=args.merge)
                what = "linked" if result["linked"] else "already linked"
                merged = f" (merged {result['merged']} in)" if result["merged"] else ""
                console.print(escape(f"{result['identity']}: {what} to {result['customer_id']}{merged}"))
            elif args.action == "unlink":
                result = await unlink(
                    customers,
                    args.customer,
                    args.identity,
                    "cli",
                    reason=args.reason,
                    targets=ErasureTargets.from_config(config),
                )
                what = "unlinked from" if result["unlinked"] else "was already unlinked from"
                resolved = _count(result["conversations_resolved"], "open conversation")
                taken_back = result["replies_withdrawn"]
                withdrawn = f"{taken_back} unsent {'reply' if taken_back == 1 else 'replies'}"
                line = (
                    f"{result['identity']}: {what} {result['customer_id']}"
                    f" ({resolved} on it resolved, {withdrawn} taken back)"
                )
                console.print(escape(line))
            else:
                result = await customers.merge(args.survivor, args.other, "cli")
                moved = _count(len(result["identities_moved"]), "address")
                if result["already_merged"]:  # a retry: nothing new written, the addresses checked
                    console.print(
                        escape(
                            f"{result['merged_id']} was already merged into {result['customer_id']}:"
                            f" nothing new written ({moved} pointed at the survivor)"
                        )
                    )
                else:
                    console.print(escape(f"merged {result['merged_id']} into {result['customer_id']} ({moved} moved)"))
        except CustomerError as err:
            errors.print(f"[red]refused ({err.status}): {escape(err.reason)}")
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
        bar.console.print(f"[red]line {error.line}[/red]: {escape(error.reason)}", markup=True, highlight=False)

    # Off a terminal (and not told to stay quiet): a line every few seconds instead of the bar.
    lines = LineTasks("customers.import_progress") if progress is None and not show else None
    async with _customers(config) as customers:
        try:
            with bar:
                report = await import_file(
                    path,
                    customers,
                    dry_run=dry_run,
                    fmt=fmt,
                    progress=lines or bar,
                    on_error=on_error,
                    concurrency=concurrency,
                )
        except FileError as err:
            out.print(f"[red]relaydesk customers import: {escape(str(err))}")
            return 2
        finally:
            if lines is not None:
                lines.stop()
    if report.ignored_columns:
        out.print(escape(f"ignored columns: {', '.join(report.ignored_columns)}"))
    prefix = "dry run, nothing written: " if dry_run else ""
    out.print(prefix + report.summary(), highlight=False)
    if report.errors:
        numbers = [str(e.line) for e in report.errors]
        more = f" and {len(numbers) - 30} more" if len(numbers) > 30 else ""
        out.print(f"[red]{len(numbers)} lines failed:[/red] " + ", ".join(numbers[:30]) + more, highlight=False)
        return 1
    return 0
