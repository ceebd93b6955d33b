"""What each conformance test runs against: a real nats-server, the connector in a
``ConnectorRuntime`` on a free port and the fake provider API (``Harness``, started by
``running_harness``), and the requests sent to it (``SampleRequest``). The tests themselves:
``connectors.sdk.conformance.kit`` (which also exports these names).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from services.bus.embedded import EmbeddedNats

from ..base import Connector
from ..runtime import ConnectorRuntime
from .helpers import FakeProvider, Published, conformance_nats, read_inbound
from .hygiene import LoopWatch, captured_logs


@dataclass(frozen=True)
class SampleRequest:
    """One request as the provider would send it. ``path`` may carry a query string.
    ``expect``: InboundMessage fields the resulting event must have; for a valid sample it
    must include ``provider_message_id``."""

    path: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"
    expect: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Harness:
    server: EmbeddedNats
    nc: NATS
    fake: FakeProvider
    runtime: ConnectorRuntime
    base_url: str
    # Stalls of the event loop, and every log line (structlog and logging) since the start.
    loop: LoopWatch = field(default_factory=LoopWatch)
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)

    @property
    def connector(self) -> Connector:
        return self.runtime.connector

    async def send(self, sample: SampleRequest) -> tuple[int, bytes, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                sample.method, self.base_url + sample.path, data=sample.body, headers=dict(sample.headers)
            ) as resp,
        ):
            return resp.status, await resp.read(), resp.content_type

    async def published(self) -> list[Published]:
        return await read_inbound(self.nc.jetstream(), self.connector.channel)


@contextlib.asynccontextmanager
async def running_harness(
    connector_class: type[Connector],
    config: Callable[[str], dict[str, Any]],
    fake: FakeProvider,
    tmp_path: Path,
) -> AsyncIterator[Harness]:
    """``connector_class`` configured by ``config(provider_url)`` (host, port and timeouts
    overridden), a nats-server and ``fake``, running; all stopped on the way out. The loop is
    watched and every log line kept from before the connector starts to after it stops."""
    with captured_logs() as logs:
        async with (
            LoopWatch().running() as loop,
            conformance_nats(tmp_path) as (server, nc),
            _running(connector_class, config, fake, nc) as (runtime, base_url),
        ):
            yield Harness(server, nc, fake, runtime, base_url, loop, logs)


@contextlib.asynccontextmanager
async def _running(
    connector_class: type[Connector],
    config: Callable[[str], dict[str, Any]],
    fake: FakeProvider,
    nc: NATS,
) -> AsyncIterator[tuple[ConnectorRuntime, str]]:
    runtime: ConnectorRuntime | None = None
    try:
        await fake.start()
        raw = {
            **config(fake.url),
            "host": "127.0.0.1",
            "port": 0,
            "ack_timeout": 1.0,
            "deliver_backoff": 0.05,
            "deliver_timeout": 5.0,
            "outbound_fetch_timeout": 0.5,
        }
        runtime = ConnectorRuntime(connector_class.from_config(raw), nc)
        [base_url, *_] = await runtime.start()
        yield runtime, base_url
    finally:
        if runtime is not None:
            await runtime.stop()
        await fake.stop()
