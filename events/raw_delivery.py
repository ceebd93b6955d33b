"""Messages of chosen subscriptions handed straight from nats-py's protocol parser.

nats-py turns every message into a ``Msg`` (its headers parsed into a dict), queues it and
runs the subscription's callback in a task: about half of what a replay of the log cost in
Python. ``raw_handlers(nc)`` installs, once per connection, a dispatcher in front of the
client's ``_process_msg`` (the parser's one entry point for messages): a subscription
registered in the table it returns gets its messages as plain bytes (subject, reply, payload,
raw headers) in a plain function call; every other message goes on to nats-py as before. The
last ``drop_raw_handler`` removes the dispatcher. Where this nats-py has no such entry point
``raw_handlers`` returns None and the caller subscribes with a callback as usual
(``events.ordered_reader``, under ``events.replay``, does both; its tests run both).

While the dispatcher is in place the parser itself takes a shortcut (``_fast_parse``): a
message with headers (every message of the log) that is whole in the buffer is cut out with
``find`` and ``split`` and, for a raw subscription, handed over in a plain call, where
nats-py's parser tries two regular expressions and awaits ``_process_msg`` for each. Anything
else (a message cut off at the end of a read, one without headers, PING, INFO, errors) goes
through nats-py's parser as before.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from collections.abc import Callable
from typing import Any

RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]
_RAW_HANDLERS = "_relaydesk_raw_handlers"


def raw_handlers(nc: Any) -> dict[int, RawHandler] | None:
    """The connection's table of raw handlers by subscription id, installing the dispatcher
    on first use; None if this nats-py has no ``_process_msg`` to hook."""
    handlers: dict[int, RawHandler] | None = getattr(nc, _RAW_HANDLERS, None)
    if handlers is not None:
        return handlers
    original = getattr(nc, "_process_msg", None)
    stats = getattr(nc, "stats", None)
    if original is None or not inspect.iscoroutinefunction(original) or not isinstance(stats, dict):
        return None
    table: dict[int, RawHandler] = {}

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        handler = table.get(sid)
        if handler is None:
            await original(sid, subject, reply, data, headers)
            return
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        handler(subject, reply, data, headers)

    nc._process_msg = process_msg
    setattr(nc, _RAW_HANDLERS, table)
    parser = getattr(nc, "_ps", None)
    if parser is not None and _parser_fits(parser):
        parser.parse = _fast_parse(parser, table, stats, process_msg)
    return table


_HMSG = b"HMSG "
_CRLF = b"\r\n"


def _parser_fits(parser: Any) -> bool:
    """Whether ``parser`` is nats-py's, as ``_fast_parse`` knows it (state names and fields)."""
    module = sys.modules.get(type(parser).__module__)
    return (
        module is not None
        and getattr(module, "AWAITING_CONTROL_LINE", None) == _AWAITING_CONTROL_LINE
        and getattr(module, "AWAITING_MSG_PAYLOAD", None) == _AWAITING_MSG_PAYLOAD
        and inspect.iscoroutinefunction(getattr(parser, "parse", None))
        and all(hasattr(parser, name) for name in ("buf", "state", "needed", "header_needed", "msg_arg"))
    )


_AWAITING_CONTROL_LINE = 1  # nats-py's parser states: between two operations,
_AWAITING_MSG_PAYLOAD = 2  # and after a message's line, waiting for the rest of it


def _fast_parse(
    parser: Any, table: dict[int, RawHandler], stats: dict[str, int], process_msg: Callable[..., Any]
) -> Callable[[bytes], Any]:
    """``parser.parse`` with a shortcut for messages with headers (see the module docstring).
    One cut off at the end of a read stays in the buffer, line and all, until the rest comes;
    another operation first in the buffer goes to nats-py's parser, with what follows it."""
    original = parser.parse

    async def parse(data: bytes = b"") -> None:
        buf: bytearray = parser.buf
        buf.extend(data)
        if parser.state == _AWAITING_MSG_PAYLOAD:  # nats-py's parser stopped inside a message
            if len(buf) < parser.needed + 2:
                return
            await _finish_message(parser, buf, process_msg)
            if parser.buf is not buf:  # reset (a reconnect) meanwhile
                return
        start = 0  # what of ``buf`` is consumed (cut off once, at the end)
        try:
            while buf.startswith(_HMSG, start):
                end = buf.find(_CRLF, start)
                if end < 0:
                    return  # the line is cut off: wait for the rest
                # HMSG <subject> <sid> [<reply>] <header bytes> <total bytes>
                args = bytes(buf[start + len(_HMSG) : end]).split()
                if len(args) == 5:
                    subject, sid, reply, head, total = args
                elif len(args) == 4:
                    subject, sid, head, total = args
                    reply = b""
                else:
                    break  # not what we know: nats-py's parser says what it is
                if not (sid.isdigit() and head.isdigit() and total.isdigit()):
                    break
                size, header_size, body = int(total), int(head), end + 2
                if len(buf) < body + size + 2:
                    return  # the message is cut off: wait for the rest
                headers = bytes(buf[body : body + header_size]) if header_size else None
                payload = bytes(buf[body + header_size : body + size])
                start = body + size + 2
                handler = table.get(int(sid))
                if handler is None:  # nats-py's own delivery, with the buffer as it expects
                    del buf[:start]
                    start = 0
                    await process_msg(int(sid), subject, reply, payload, headers)
                    if parser.buf is not buf:
                        return
                    continue
                stats["in_msgs"] += 1
                stats["in_bytes"] += len(payload)
                handler(subject, reply, payload, headers)
        finally:
            if start:
                del buf[:start]
        if buf:
            await original()

    return parse


async def _finish_message(parser: Any, buf: bytearray, process_msg: Callable[..., Any]) -> None:
    """The message nats-py's parser began (its line read, the rest now in ``buf``), handed on
    as that parser would."""
    needed, header_size, arg = parser.needed, parser.header_needed, parser.msg_arg
    headers = bytes(buf[:header_size]) if header_size > 0 else None
    payload = bytes(buf[header_size:needed])
    del buf[: needed + 2]
    parser.header_needed = 0
    parser.state = _AWAITING_CONTROL_LINE
    await process_msg(arg["sid"], arg["subject"], arg["reply"], payload, headers)


def drop_raw_handler(nc: Any, sid: int) -> None:
    """Stop handing ``sid``'s messages over raw (before unsubscribing it)."""
    table: dict[int, RawHandler] | None = getattr(nc, _RAW_HANDLERS, None)
    if table is None:
        return
    table.pop(sid, None)
    if not table:  # the last one: nats-py's own methods again, no detour for anyone
        delattr(nc, _RAW_HANDLERS)
        if "_process_msg" in vars(nc):
            del nc._process_msg
        parser = getattr(nc, "_ps", None)
        if parser is not None and "parse" in vars(parser):
            del parser.parse


def parse_headers(raw: bytes | dict[str, str] | None) -> dict[str, str] | None:
    """``NATS/1.0[ status]``, then ``Key: Value`` lines, as a dict (kept raw until needed)."""
    if raw is None or isinstance(raw, dict):
        return raw
    out: dict[str, str] = {}
    lines = raw.decode(errors="replace").split("\r\n")
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


class DirectReadRefused(RuntimeError):
    """The server answered a batched direct get with an error status (or not as a batch)."""


def _header_fields(raw: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """The status line's code (b"" for a message) and the header fields, read off raw bytes."""
    lines = raw.split(b"\r\n")
    status = lines[0][9:12]  # b"NATS/1.0 204 EOB" -> b"204"; b"NATS/1.0" -> b""
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(b":")
        if sep:
            fields[key.strip()] = value.strip()
    return status, fields


async def direct_read_all(
    nc: Any, stream: str, filter_subject: str, on_message: Callable[[str, bytes], None], *, timeout: float, batch: int
) -> int | None:
    """Every message on ``filter_subject`` in ``stream`` as it stands, read with batched direct
    gets (nats-server 2.11+, a stream with ``allow_direct``), each message handed to
    ``on_message(subject, data)`` straight from the protocol parser: no consumer to create,
    no ``Msg``, no task per message. Returns how many; None where this nats-py has no raw
    delivery (the caller reads some other way). Raises ``DirectReadRefused`` when the server
    does not answer batches, TimeoutError when a batch does not end within ``timeout``."""
    handlers = raw_handlers(nc)
    if handlers is None:
        return None
    inbox = nc.new_inbox()
    ended: asyncio.Future[tuple[int, bool]] | None = None
    last = 0  # the last stream sequence handed over
    count = 0

    def on_raw(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        nonlocal last, count
        if ended is None or ended.done():
            return  # the end of a batch given up on
        status, fields = _header_fields(headers or b"")
        if status == b"204":  # end of batch: more left after it?
            ended.set_result((last, int(fields.get(b"Nats-Num-Pending", b"0") or 0) > 0))
        elif status == b"404":  # nothing (more) matches
            ended.set_result((last, False))
        elif status or b"Nats-Num-Pending" not in fields:
            ended.set_exception(DirectReadRefused(f"direct get on {stream} answered {headers!r}"))
        else:
            try:  # an error here would otherwise end up in nats-py's parser
                last = int(fields[b"Nats-Sequence"])
                on_message(fields[b"Nats-Subject"].decode(), data)
            except Exception as err:
                ended.set_exception(err)
                return
            count += 1

    sub = await nc.subscribe(inbox, cb=_never_called, pending_msgs_limit=-1, pending_bytes_limit=-1)
    handlers[sub._id] = on_raw
    try:
        seq, more = 1, True
        while more:
            ended = asyncio.get_running_loop().create_future()
            body = json.dumps({"seq": seq, "next_by_subj": filter_subject, "batch": batch}).encode()
            await nc.publish(f"$JS.API.DIRECT.GET.{stream}", body, reply=inbox)
            async with asyncio.timeout(timeout):
                through, more = await ended
            if more and through < seq:
                raise DirectReadRefused(f"direct get on {stream} made no progress at sequence {seq}")
            seq = through + 1
    finally:
        ended = None
        drop_raw_handler(nc, sub._id)
        await sub.unsubscribe()
    return count


async def _never_called(_msg: Any) -> None:
    """The subscription's callback: its messages all go to the raw handler."""
