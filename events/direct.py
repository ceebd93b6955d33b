"""Batched direct gets: a filtered range of a stream read without creating a consumer.

nats-server 2.11+ answers ``$JS.API.DIRECT.GET.<stream>`` with ``{"seq", "next_by_subj",
"batch"}`` by streaming up to ``batch`` matching messages (each with ``Nats-Num-Pending``)
followed by a ``204 EOB`` status (or ``404`` when nothing matches). The stream needs
``allow_direct``. One wildcard inbox subscription per connection serves every request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

log = structlog.get_logger(__name__)

Raw = tuple[int, str, bytes, dict[str, str]]  # (stream seq, subject, data, headers)
DirectAnswer = tuple[list[Raw], bool]  # (messages, more left after them)


class DirectBatches:
    """Batched direct gets (``$JS.API.DIRECT.GET.<stream>`` with ``next_by_subj`` and
    ``batch``) over one wildcard inbox subscription, many requests in flight at once."""

    def __init__(self, nc: NATS, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._sub: Any = None
        self._ids = itertools.count()
        self._pending: dict[str, tuple[list[Raw], asyncio.Future[DirectAnswer | None]]] = {}
        self._lock = asyncio.Lock()

    async def _ensure(self) -> None:
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is None:
                self._prefix = self.nc.new_inbox() + "."
                self._sub = await self.nc.subscribe(
                    self._prefix + "*", cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1
                )

    async def get(self, stream: str, filter_subject: str, seq: int, batch: int) -> DirectAnswer | None:
        """(messages as (seq, subject, data, headers), more left after them); None when the
        server does not answer batches (older than 2.11)."""
        await self._ensure()
        token = str(next(self._ids))
        future: asyncio.Future[DirectAnswer | None] = asyncio.get_running_loop().create_future()
        self._pending[token] = ([], future)
        body = json.dumps({"seq": seq, "next_by_subj": filter_subject, "batch": batch}).encode()
        try:
            await self.nc.publish(f"$JS.API.DIRECT.GET.{stream}", body, reply=self._prefix + token)
            return await asyncio.wait_for(future, self.timeout)
        finally:
            self._pending.pop(token, None)

    async def _on_msg(self, msg: Msg) -> None:
        entry = self._pending.get(msg.subject.rsplit(".", 1)[-1])
        if entry is None or entry[1].done():
            return  # an answer to a request that timed out
        got, future = entry
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "204":  # end of batch
            future.set_result((got, int(headers.get("Nats-Num-Pending", "0") or 0) > 0))
        elif status == "404":  # nothing (more) matches
            future.set_result((got, False))
        elif status or "Nats-Num-Pending" not in headers:
            # Refused, or an older server answered one message, not a batch: the caller
            # reads some other way.
            log.info("direct_get.unsupported", status=status, description=headers.get("Description"))
            future.set_result(None)
        else:
            got.append((int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data, dict(headers)))
