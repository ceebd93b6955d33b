"""Messages of chosen subscriptions handed straight from nats-py's protocol parser.

nats-py turns every message into a ``Msg`` (its headers parsed into a dict), queues it and
runs the subscription's callback in a task: about half of what a replay of the log cost in
Python. ``raw_handlers(nc)`` installs, once per connection, a dispatcher in front of the
client's ``_process_msg`` (the parser's one entry point for messages): a subscription
registered in the table it returns gets its messages as plain bytes (subject, reply, payload,
raw headers) in a plain function call; every other message goes on to nats-py as before. The
last ``drop_raw_handler`` removes the dispatcher. Where this nats-py has no such entry point
``raw_handlers`` returns None and the caller subscribes with a callback as usual
(``events.replay`` does both; its tests run both).
"""

from __future__ import annotations

import inspect
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
    return table


def drop_raw_handler(nc: Any, sid: int) -> None:
    """Stop handing ``sid``'s messages over raw (before unsubscribing it)."""
    table: dict[int, RawHandler] | None = getattr(nc, _RAW_HANDLERS, None)
    if table is None:
        return
    table.pop(sid, None)
    if not table:  # the last one: nats-py's own method again, no detour for anyone
        delattr(nc, _RAW_HANDLERS)
        if "_process_msg" in vars(nc):
            del nc._process_msg


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
