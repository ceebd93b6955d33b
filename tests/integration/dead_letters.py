"""Shared by the dead-letter tests: a fast redelivery bound, the CLI in-process, probes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from connectors.sdk.deadletter import Redelivery
from events.model import InboundMessage
from events.parking import ParkedMessage, ParkingLot
from events.store import EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from services.cli import main as cli_main

FAST = Redelivery(max_deliver=3, retry_delays=(0.05, 0.1), ack_wait=5.0, report_retry=0.3)
MALFORMED = b'{"type": "inbound_message", "channel": "sms", "sender": '


def quiet_cli_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI configures logging for a terminal; in-process that would point every later log
    line at the test's captured (then closed) stderr. Call it from an autouse fixture."""
    monkeypatch.setattr("services.logs.configure", lambda *args, **kwargs: None)


def dead_letter_count(reader: str, stream: str) -> float:
    value = REGISTRY.get_sample_value("relaydesk_dead_letters_total", {"reader": reader, "stream": stream})
    return value or 0.0


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``relaydesk ...`` in-process (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, list(argv))
    return code, capsys.readouterr().out


def sms(sid: str, sender: str, text: str) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC), channel="sms", provider="twilio", provider_message_id=sid, sender=sender, text=text
    )


async def settled(js: Any, stream: str, durable: str) -> Any:
    """The consumer's info once nothing is pending or waiting for an ack (None before)."""
    info = await js.consumer_info(stream, durable)
    return info if info.num_ack_pending == 0 and info.num_pending == 0 else None


async def parked_where(lot: ParkingLot, test: Any) -> ParkedMessage | None:
    for record in await lot.list():
        if test(record):
            return record
    return None


@contextlib.asynccontextmanager
async def private_nats(server: EmbeddedNats) -> AsyncIterator[tuple[str, NATS, EventStore]]:
    """A connection to a server of the test's own (intake's durable takes all of rd.inbound.>)."""
    nc = await nats.connect(server.url)
    await ensure_streams(nc.jetstream())
    try:
        yield server.url, nc, EventStore(nc, nc.jetstream())
    finally:
        await nc.drain()
