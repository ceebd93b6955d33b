"""Parked messages for operators: ``relaydesk dlq list|show|retry|drop`` (``relaydesk status`` is services/status.py).

Both kinds of parked records (``events.parking``) are listed: ``dead_letter`` (a work message
on ``RD_INBOUND`` or ``RD_OUTBOUND`` that could not be decoded or failed every bounded
redelivery, then was terminated) and ``quarantined`` (an event on the append-only log that a
reader skipped). A dead letter can be re-driven: ``retry`` publishes its raw data and headers
again on its original subject, with a fresh ``Nats-Msg-Id`` (``retry:<key>:<n>``) so the
stream's dedupe window does not swallow it, then drops the record. A quarantined event is
never re-driven (the log is append-only: fix forward with a corrective event, then ``drop``).

The API (``services.api.dlq``) serves the same operations; these talk to NATS directly.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from rich.console import Console

from events.parking import ParkedKind, ParkedMessage, ParkingLot, encode_payload_for_display
from services.config import Config
from services.nats_connection import let_go

log = structlog.get_logger(__name__)

RETRY_HEADER = "Relaydesk-Retry-Of"
RETRIES_HEADER = "Relaydesk-Retries"
KINDS: tuple[ParkedKind, ...] = ("dead_letter", "quarantined")


class DlqError(Exception):
    """An operation refused, with an HTTP-like status and a reason for a person."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def summary(record: ParkedMessage, *, with_data: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": record.key,
        "kind": record.kind,
        "stream": record.stream,
        "seq": record.seq,
        "subject": record.subject,
        "reader": record.reader,
        "error": record.error,
        "deliveries": record.deliveries,
        "parked_at": record.parked_at.isoformat(),
        "size": len(record.data),
        "retryable": record.kind == "dead_letter",
    }
    if with_data:
        out["headers"] = dict(record.headers)
        out["data"] = encode_payload_for_display(record.data)
    else:
        out["preview"] = record.preview(80)
    return out


class DeadLetters:
    """What the CLI and the API do with parked records."""

    def __init__(self, nc: NATS) -> None:
        self.js = nc.jetstream()
        self.lot = ParkingLot(self.js)

    async def list(self, kind: ParkedKind | None = None) -> list[ParkedMessage]:
        return await self.lot.list(kind)

    async def get(self, key: str) -> ParkedMessage:
        record = await self.lot.get(key)
        if record is None:
            raise DlqError(404, f"nothing parked under {key}")
        return record

    async def retry(self, key: str, actor: str) -> dict[str, Any]:
        """Publish the dead letter again on its subject, then drop the record."""
        record = await self.get(key)
        if record.kind != "dead_letter":
            raise DlqError(
                409,
                f"{key} is a quarantined event on the append-only log {record.stream}: it is never re-driven. "
                "Fix forward (append a corrective event), then drop the record.",
            )
        if not record.subject:
            record = await self._with_payload_from_stream(record)
        n = _int(record.headers.get(RETRIES_HEADER)) + 1
        msg_id = f"retry:{key}:{n}"
        headers = {k: v for k, v in record.headers.items() if not k.lower().startswith("nats-")}
        headers.update({"Nats-Msg-Id": msg_id, RETRY_HEADER: key, RETRIES_HEADER: str(n)})
        try:
            ack = await self.js.publish(record.subject, record.data, stream=record.stream, headers=headers)
        except Exception as err:  # no ack (NATS away, or this role may not publish there): keep the record
            log.warning("dlq.retry_failed", key=key, nats_subject=record.subject, actor=actor, error=repr(err))
            raise DlqError(
                503, f"could not publish on {record.subject} ({type(err).__name__}: {err}); the record is kept"
            ) from err
        await self.lot.drop(key)
        log.info(
            "dlq.retried",
            key=key,
            nats_subject=record.subject,
            new_seq=ack.seq,
            duplicate=bool(ack.duplicate),
            actor=actor,
        )
        return {
            "key": key,
            "subject": record.subject,
            "stream": ack.stream,
            "seq": ack.seq,
            "msg_id": msg_id,
            "duplicate": bool(ack.duplicate),
        }

    async def _with_payload_from_stream(self, record: ParkedMessage) -> ParkedMessage:
        """A dead letter parked without its payload (its reader may not read the stream):
        the message is still in the stream, read here by sequence."""
        try:
            raw = await self.js.get_msg(record.stream, record.seq)
        except Exception as err:  # gone (expired) or NATS away: nothing to re-drive yet
            raise DlqError(
                409,
                f"{record.key} was parked without its payload and {record.stream} no longer answers for it: {err!r}",
            ) from err
        return msgspec.structs.replace(
            record, subject=raw.subject or "", data=raw.data or b"", headers=dict(raw.headers or {})
        )

    async def drop(self, key: str, actor: str) -> None:
        if not await self.lot.drop(key):
            raise DlqError(404, f"nothing parked under {key}")
        log.info("dlq.dropped", key=key, actor=actor)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


# -- the command line ---------------------------------------------------------------------

DLQ_HELP = """\
Parked messages:
(RELAYDESK_NATS_URL or --nats-url; beside `relaydesk up`, its embedded NATS is found)

  relaydesk dlq list [--kind dead_letter|quarantined] [--json]
                                  every parked message: key, kind, reader, subject, deliveries, error
  relaydesk dlq show KEY [--json] one record with its headers and raw data
  relaydesk dlq retry KEY         publish a dead letter again on its subject (fresh Nats-Msg-Id
                                  retry:KEY:N), then drop the record; quarantined log events are
                                  refused (the log is append-only: fix forward, then drop)
  relaydesk dlq drop KEY          forget a record (after fixing forward, or when it is junk)

A KEY is <stream>.<sequence>, e.g. RD_INBOUND.42.
"""


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="dead letters and quarantined events: list, show, retry, drop",
        description=DLQ_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list parked messages")
    common(listing)
    listing.add_argument("--kind", choices=KINDS, help="only this kind (default: both)")
    listing.add_argument("--json", action="store_true", help="print JSON (one object with a list)")
    show = actions.add_parser("show", help="show one parked message with its headers and data")
    common(show)
    show.add_argument("key", metavar="KEY", help="<stream>.<sequence>, as `dlq list` prints it")
    show.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (
        ("retry", "publish a dead letter again on its original subject, then drop the record"),
        ("drop", "forget a parked record"),
    ):
        action = actions.add_parser(name, help=text)
        common(action)
        action.add_argument("key", metavar="KEY", help="<stream>.<sequence>, as `dlq list` prints it")


async def _connect(url: str, config: Config) -> NATS:
    from services.bootstrap import connect_for_tool

    return await connect_for_tool(url, config)


def dlq_command(args: argparse.Namespace, config: Config) -> int:
    if not config.nats.url:
        raise SystemExit("relaydesk dlq: set RELAYDESK_NATS_URL or --nats-url (or run beside `relaydesk up`)")
    return asyncio.run(_dlq(args, config))


async def _dlq(args: argparse.Namespace, config: Config) -> int:
    url = config.nats.url
    out = Console(soft_wrap=True, highlight=False)
    try:
        nc = await _connect(url, config)
    except Exception as err:
        print(f"relaydesk dlq: cannot connect to NATS at {url}: {err}", file=sys.stderr)
        return 1
    try:
        dl = DeadLetters(nc)
        if args.action == "list":
            records = await dl.list(args.kind)
            if args.json:
                print(msgspec.json.encode({"parked": [summary(r) for r in records], "count": len(records)}).decode())
            else:
                _print_list(out, records)
        elif args.action == "show":
            record = await dl.get(args.key)
            if args.json:
                print(msgspec.json.encode(summary(record, with_data=True)).decode())
            else:
                _print_one(out, record)
        elif args.action == "retry":
            done = await dl.retry(args.key, "cli")
            again = " (already re-published earlier: deduplicated)" if done["duplicate"] else ""
            out.print(
                f"{args.key}: re-published on {done['subject']} as {done['stream']}.{done['seq']}{again}; "
                "record dropped"
            )
        else:
            await dl.drop(args.key, "cli")
            out.print(f"{args.key}: dropped")
    except DlqError as err:
        print(f"relaydesk dlq {args.action}: {err.reason}", file=sys.stderr)
        return 1
    finally:
        await let_go(nc)
    return 0


def _table(header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> str:
    """Plain aligned columns (no wrapping or truncation, so keys can be copied and grepped)."""
    cells = [header, *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _print_list(out: Console, records: list[ParkedMessage]) -> None:
    if not records:
        out.print("nothing parked")
        return
    rows: list[tuple[object, ...]] = [
        (r.key, r.kind, r.reader, r.subject, r.deliveries, r.parked_at.strftime("%Y-%m-%d %H:%M:%S"), r.error[:80])
        for r in records
    ]
    out.print(_table(("KEY", "KIND", "READER", "SUBJECT", "DELIVERIES", "PARKED AT", "ERROR"), rows))
    out.print(f"{len(records)} parked; `relaydesk dlq show KEY` for one, `retry KEY` to re-drive a dead letter")


def _print_one(out: Console, r: ParkedMessage) -> None:
    for name, value in summary(r).items():
        if name != "preview":
            out.print(f"{name:>11}: {value}")
    for name, value in r.headers.items():
        out.print(f"{'header':>11}: {name}: {value}")
    out.print(f"{'data':>11}: {encode_payload_for_display(r.data)}")
