"""A lean HTTP/1.1 load generator for the benchmarks, run in a process of its own.

Signed Twilio webhooks (the README's signature) are built before the clock starts, then sent
over ``concurrency`` keep-alive connections, one request in flight per connection, by a raw
asyncio client (no HTTP library: the generator must cost far less than the server it loads).
Each request's latency is measured from its write to the end of its answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlencode, urlsplit

FROM_BASE = 15_550_000_000


@dataclass
class Load:
    """What the generator measured for one batch of requests."""

    sent: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    statuses: dict[int, int] = field(default_factory=dict)
    cpu: float = 0.0  # the generator's own CPU seconds
    started: dict[str, float] = field(default_factory=dict)  # MessageSid -> time.monotonic() when sent


def twilio_params(prefix: str, n: int, *, new_customer: bool = True, first: int = 0) -> dict[str, str]:
    """Webhook ``n`` of a batch; with ``new_customer`` from number ``first + n`` (else all
    from one number)."""
    sender = FROM_BASE + first + n if new_customer else FROM_BASE
    return {
        "MessageSid": f"SM{prefix}{n:012d}",
        "AccountSid": "AC" + "0" * 32,
        "From": f"+{sender}",
        "To": "+15557654321",
        "Body": f"Hello, I was charged twice for order {n} and would like a refund",
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }


def signed_request(url: str, token: str, params: dict[str, str]) -> bytes:
    """The whole HTTP/1.1 request, signed as Twilio signs it."""
    payload = url + "".join(k + params[k] for k in sorted(params))
    sig = base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()
    body = urlencode(params).encode()
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        f"X-Twilio-Signature: {sig}\r\nUser-Agent: TwilioProxy/1.1\r\n\r\n"
    )
    return head.encode() + body


async def _worker(host: str, port: int, queue: list[tuple[str, bytes]], load: Load) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while queue:
            key, request = queue.pop()
            start = time.perf_counter()
            load.started[key] = time.monotonic()  # comparable across processes (CLOCK_MONOTONIC)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            load.sent += 1
            load.statuses[status] = load.statuses.get(status, 0) + 1
            if status == 200:
                load.latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def run_load(queues: dict[str, list[tuple[str, bytes]]], concurrency: int) -> Load:
    """Send each URL's requests over its share of ``concurrency`` connections."""
    load = Load()
    workers = []
    urls = list(queues)
    for i in range(max(concurrency, len(urls))):
        parts = urlsplit(urls[i % len(urls)])
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        workers.append(_worker(host, port, queues[urls[i % len(urls)]], load))
    cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*workers)
    load.elapsed = time.perf_counter() - start
    load.cpu = time.process_time() - cpu
    return load


def build(
    urls: Sequence[str], token: str, prefix: str, count: int, first: int | None
) -> dict[str, list[tuple[str, bytes]]]:
    """``count`` signed webhooks spread over ``urls``, each queue in reverse (workers pop); from
    numbers ``first``, ``first + 1``… (None: all from one number)."""
    queues: dict[str, list[tuple[str, bytes]]] = {url: [] for url in urls}
    for n in range(count):
        url = urls[n % len(urls)]
        params = twilio_params(prefix, n, new_customer=first is not None, first=first or 0)
        queues[url].append((params["MessageSid"], signed_request(url, token, params)))
    for queue in queues.values():
        queue.reverse()
    return queues


def _serve(conn: Connection) -> None:
    """The generator process: each command is (urls, token, prefix, count, concurrency, first)."""
    while True:
        command = conn.recv()
        if command is None:
            return
        urls, token, prefix, count, concurrency, first = command
        conn.send(asyncio.run(run_load(build(urls, token, prefix, count, first), concurrency)))


class LoadGenerator:
    """A generator process; ``await run(...)`` sends one batch and returns what it measured."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process: Any = ctx.Process(target=_serve, args=(child,), daemon=True, name="relaydesk-loadgen")
        self._process.start()

    async def run(
        self,
        url: str | Sequence[str],
        token: str,
        prefix: str,
        count: int,
        concurrency: int,
        *,
        first: int | None = 0,
    ) -> Load:
        """Send ``count`` webhooks (MessageSid ``SM<prefix><n:012d>``, from numbers ``first + n``;
        ``first=None``: all from one number) to ``url`` (or spread over several URLs) and return
        what the generator measured."""
        urls = [url] if isinstance(url, str) else list(url)
        self._conn.send((urls, token, prefix, count, concurrency, first))
        result: Load = await asyncio.get_running_loop().run_in_executor(None, self._conn.recv)
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the process is gone already: nothing to tell it
            self._conn.send(None)
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
