"""Parked messages for operators: ``relaydesk dlq list|show|retry|drop`` (``relaydesk status``: ``services.status``).

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
import contextlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError
from rich.console import Console

from events.parking import PARKED_BUCKET, ParkedKind, ParkedMessage, ParkingLot, encode_payload_for_display
from events.skips import count_skip
from services.bus.auth import describe_servers
from services.bus.connection import let_go, permission_denied
from services.bus.errors import NATS_ERRORS
from services.bus.tool_connect import CredentialsRefused
from services.config import Config
from services.metrics import MEASURED_AT, PARKED
from services.terminal_text import printable
from services.tool_runner import say_failure

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


# -- what is parked now, as a gauge (the API exports it) -----------------------------------

PARKED_STREAM = f"KV_{PARKED_BUCKET}"
_PARKED_SUBJECTS = f"$KV.{PARKED_BUCKET}.>"
# How often the API reads what changed in rd_parked: one STREAM.INFO when nothing did.
PARKED_REFRESH_S = 15.0

Labels = tuple[str, str, str]  # (kind, stream, reader)


class _Labels(msgspec.Struct):
    """The fields of a parked record the gauge is labelled by (the rest is not decoded)."""

    kind: str
    stream: str
    reader: str


_labels_decoder = msgspec.json.Decoder(_Labels)


class ParkedNow:
    """How many messages are parked right now, by (kind, stream, reader), from the bucket
    itself: the same records ``relaydesk status``, ``relaydesk dlq list`` and ``GET /v1/dlq``
    count (``ParkingLot.counts``), without reading every record at every refresh.

    The bucket's stream keeps one message per key (history 1): a record as parked, or the
    purge marker ``drop`` leaves (empty data; a key once dropped is never parked again, see
    ``ParkingLot.park``). A refresh asks the stream's last sequence (one request) and reads only
    the messages written since the last refresh, one ``STREAM.MSG.GET`` each: a new record
    counts, a marker uncounts its key. The first refresh reads the whole bucket once."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.folded = 0  # the bucket stream's last sequence read
        self.live: dict[str, Labels] = {}  # key -> its labels, for every record parked now
        self.reads = 0  # messages read (for tests: a refresh with nothing new reads none)
        self._exported: set[Labels] = set()

    async def refresh(self) -> dict[Labels, int]:
        """Read what changed since the last refresh; the counts now. NATS errors propagate
        (the counts then stay as last read)."""
        info = await self.js.stream_info(PARKED_STREAM)
        last = int(info.state.last_seq or 0)
        if last < self.folded:  # the bucket was made again (or restored): read it again
            self.folded, self.live = 0, {}
        while self.folded < last:
            try:
                raw = await self.js.get_msg(PARKED_STREAM, seq=self.folded + 1, subject=_PARKED_SUBJECTS, next=True)
            except NotFoundError:  # nothing left after it (the last ones were rolled up)
                break
            seq = int(raw.seq or 0)
            if seq <= self.folded:
                break
            self.reads += 1
            self._fold((raw.subject or "").removeprefix(_PARKED_SUBJECTS[:-1]), raw.data or b"")
            self.folded = seq
        return self.counts()

    def _fold(self, key: str, data: bytes) -> None:
        if not data:  # a purge (or delete) marker: the record was dropped
            self.live.pop(key, None)
            return
        try:
            record = _labels_decoder.decode(data)
        except msgspec.DecodeError:
            log.warning("dlq.parked_record_unreadable", key=key, skipped="not counted in relaydesk_parked_messages")
            count_skip("dlq.parked_record")
            return
        self.live[key] = (record.kind, record.stream, record.reader)

    def counts(self) -> dict[Labels, int]:
        return dict(Counter(self.live.values()))

    def export(self) -> dict[Labels, int]:
        """``relaydesk_parked_messages`` set from the counts: a label set no longer parked
        reads 0 (not gone: a series that vanished would look unmeasured)."""
        counts = self.counts()
        for labels in self._exported | set(counts):
            kind, stream, reader = labels
            PARKED.labels(kind=kind, stream=stream, reader=reader).set(counts.get(labels, 0))
        self._exported |= set(counts)
        return counts


async def export_parked(nc: NATS, stop: asyncio.Event, *, every: float | None = None) -> None:
    """``relaydesk_parked_messages``, refreshed every ``every`` seconds (``PARKED_REFRESH_S``)
    until ``stop``: the API runs it, so one process exports it (services.metrics). While
    NATS is away the gauge keeps the counts last read."""
    parked = ParkedNow(nc.jetstream())
    failing = False
    while not stop.is_set():
        try:
            await parked.refresh()
            parked.export()
            MEASURED_AT.labels(what="parked").set_to_current_time()
            failing = False
        except NATS_ERRORS as err:
            if not failing:  # said once per outage, not at every refresh
                log.info("dlq.parked_unknown", error=repr(err)[:200], keeps="the counts last read")
            failing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PARKED_REFRESH_S if every is None else every):
                await stop.wait()


# -- the command line ---------------------------------------------------------------------


async def _connect(url: str, config: Config) -> NATS:
    from services.bootstrap import connect_for_tool

    return await connect_for_tool(url, config)


def dlq_command(args: argparse.Namespace, config: Config) -> int:
    if not config.nats.url:
        say_failure(
            "dlq",
            "nats_unreachable",
            "set RELAYDESK_NATS_URL or --nats-url (or run beside `relaydesk up`)",
            as_json=bool(getattr(args, "json", False)),
        )
        return 1
    return asyncio.run(_dlq(args, config))


async def _dlq(args: argparse.Namespace, config: Config) -> int:
    as_json = bool(getattr(args, "json", False))
    tool = f"dlq {args.action}"
    where = describe_servers(config.nats.url)
    out = Console(soft_wrap=True, highlight=False, markup=False)  # parked data and errors as they are
    try:
        nc = await _connect(config.nats.url, config)
    except Exception as err:
        code = "nats_credentials_refused" if isinstance(err, CredentialsRefused) else "nats_unreachable"
        say_failure(tool, code, f"cannot connect to NATS at {where}: {err}", as_json=as_json)
        return 1
    try:
        dl = DeadLetters(nc)
        if args.action == "list":
            records = await dl.list(args.kind)
            if as_json:
                print(msgspec.json.encode({"parked": [summary(r) for r in records], "count": len(records)}).decode())
            else:
                _print_list(out, records)
        elif args.action == "show":
            record = await dl.get(args.key)
            if as_json:
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
        say_failure(tool, _STATUS_CODES.get(err.status, "unavailable"), err.reason, as_json=as_json)
        return 1
    except BucketNotFoundError:
        say_failure(
            tool,
            "not_set_up",
            f"NATS at {where} has no {PARKED_BUCKET} bucket: run `relaydesk setup` (or `relaydesk up`) first",
            as_json=as_json,
        )
        return 1
    except NATS_ERRORS as err:
        # A request this role may not make is answered with nothing: it reads as a timeout, and
        # only the server's permissions violation, reported aside, says why (was a traceback).
        if denied := permission_denied(nc):
            code, why = "permission_denied", f"NATS at {where} refused it ({denied}): run it as the tool role"
        else:
            code, why = "nats_no_answer", f"NATS at {where} did not answer ({type(err).__name__}: {err})"
        say_failure(tool, code, why, as_json=as_json)
        return 1
    finally:
        await let_go(nc)
    return 0


# A refused operation's HTTP-like status (DlqError), as a --json failure's code.
_STATUS_CODES = {404: "not_found", 409: "conflict", 503: "unavailable"}


def _table(header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> str:
    """Plain aligned columns (no wrapping or truncation, so keys can be copied and grepped)."""
    # Keys, subjects and errors may carry what a customer sent (a parse error quoting a mail).
    cells = [header, *[tuple(printable(str(c)) for c in row) for row in rows]]
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
    """Escapes shown, not obeyed: the data of an unparseable mail is the first 64 KiB of what its
    sender wrote (connectors/email/unparsed.py), ESC and C1 sequences included (found by an
    audit: one cleared the operator's screen and wrote her clipboard through OSC 52)."""
    for name, value in summary(r).items():
        if name != "preview":
            out.print(f"{name:>11}: {printable(str(value))}")
    for name, value in r.headers.items():
        out.print(f"{'header':>11}: {printable(name)}: {printable(value)}")
    out.print(f"{'data':>11}: {printable(encode_payload_for_display(r.data), lines=True)}")
