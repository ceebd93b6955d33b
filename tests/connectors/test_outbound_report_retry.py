"""A reply sent whose outcome could not be reported at once is not handed to another process
of the channel, which would send it again (found by a chaos audit: NATS restarted just as a
connector process had sent a reply; its report failed, the command went back to the queue,
the channel's other process got it and sent it a second time). The outcome is reported again
in place while the command is held, and a stop waits for it. And a try that outlives the hold
(the process stopped mid-try) reports nothing: the process NATS handed the reply to does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import nats
import pytest
from nats.aio.client import Client as NATS

from connectors.sdk import Connector, DeliveryResult, ProviderRequest
from connectors.sdk.conformance import read_outcomes, wait_for_outcome
from connectors.sdk.publish import InboundPublisher
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.model import Channel, DeliverReply, InboundMessage, MessageSent
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from tests.connectors.outbound_rig import a_reply, queue, short_ack_wait

pytestmark = pytest.mark.integration


class Provider(Connector):
    """Records every send, by reply id, across the processes of the test."""

    name: ClassVar[str] = "reportmem"
    channel: ClassVar[Channel] = "chat"
    provider: ClassVar[str] = "reportmem"
    sent: ClassVar[list[str]] = []

    def verify(self, request: ProviderRequest) -> None:
        return None

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return []

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        Provider.sent.append(reply.reply_id)
        return DeliveryResult.sent(f"prov-{len(Provider.sent)}")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(store_dir=tmp_path / "js")
    await server.astart()
    try:
        yield server
    finally:
        await server.astop()


class FailingFor:
    """``InboundPublisher.report`` failing (NATS not answering) for ``seconds`` from its first call."""

    def __init__(self, publisher: InboundPublisher, seconds: float) -> None:
        self.report = publisher.report
        self.seconds = seconds
        self.since: float | None = None
        self.failures = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.since = self.since or time.monotonic()
        if time.monotonic() - self.since < self.seconds:
            self.failures += 1
            raise nats.errors.TimeoutError
        return await self.report(*args, **kwargs)


async def test_a_sent_reply_whose_report_failed_is_not_sent_again_by_the_other_process(
    server: EmbeddedNats,
) -> None:
    Provider.sent = []
    settings = {"port": 0, "outbound_fetch_timeout": 0.3}
    connections = [await nats.connect(server.url) for _ in range(3)]
    nc, first_nc, second_nc = connections
    await ensure_streams(nc.jetstream())
    first = ConnectorRuntime(Provider.from_config(settings), first_nc)
    failing = FailingFor(first.publisher, seconds=1.0)
    first.publisher.report = failing  # type: ignore[method-assign]
    await first.start()
    second: ConnectorRuntime | None = None
    try:
        reply = a_reply("chat", "c1", "hi")
        await queue(nc, reply)
        async with asyncio.timeout(10):
            while not failing.failures:
                await asyncio.sleep(0.01)
        # The channel's other process is there; this one is stopped (a rolling update).
        second = ConnectorRuntime(Provider.from_config(settings), second_nc)
        await second.start()
        await first.stop()
        found = await wait_for_outcome(nc.jetstream(), "chat", reply.reply_id, timeout=20)
        await _drained(nc)  # nothing handed back, waiting for another process
        outcomes = await read_outcomes(nc.jetstream(), "chat", reply.reply_id)
    finally:
        for runtime in (first, second):
            if runtime is not None:
                await runtime.stop()
        for conn in connections:
            with contextlib.suppress(Exception):
                await conn.close()
    assert isinstance(found.recorded, MessageSent)
    assert Provider.sent == [reply.reply_id]
    assert len(outcomes) == 1


async def _drained(nc: NATS, durable: str = "connector_reportmem") -> None:
    async with asyncio.timeout(20):
        while True:
            info = await nc.jetstream().consumer_info(subjects.OUTBOUND_STREAM, durable)
            if not info.num_pending and not info.num_ack_pending:
                return
            await asyncio.sleep(0.05)


class Stalled(Connector):
    """The first try of every process but the last takes longer than the ack wait and fails."""

    name: ClassVar[str] = "stallmem"
    channel: ClassVar[Channel] = "chat"
    provider: ClassVar[str] = "stallmem"
    tries: ClassVar[list[tuple[str, bool]]] = []
    begun: ClassVar[list[str]] = []  # the reply ids whose try has begun, in every process
    stall: bool

    def verify(self, request: ProviderRequest) -> None:
        return None

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return []

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        Stalled.begun.append(reply.reply_id)
        if self.stall:
            await asyncio.sleep(ACK_WAIT * 1.1)
            Stalled.tries.append((reply.reply_id, False))
            return DeliveryResult.failed("provider timed out", retryable=True)
        await asyncio.sleep(ACK_WAIT * 0.3)  # a provider slower than the stalled process's end
        Stalled.tries.append((reply.reply_id, True))
        return DeliveryResult.sent("prov-1")


# Seconds: short, so the test is; not shorter, so a busy machine (CI shares it) does not let
# the second process's own hold run out mid-send.
ACK_WAIT = 3.0


async def test_a_try_that_outlived_its_hold_reports_no_failure_for_a_reply_another_process_sent(
    server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_ack_wait(monkeypatch, ACK_WAIT)
    Stalled.tries, Stalled.begun = [], []
    settings = {"port": 0, "outbound_fetch_timeout": 0.3, "deliver_attempts": 1}
    connections = [await nats.connect(server.url) for _ in range(3)]
    nc = connections[0]
    await ensure_streams(nc.jetstream())
    runtimes: list[ConnectorRuntime] = []
    try:
        first = Stalled.from_config(settings)
        first.stall = True
        runtimes.append(ConnectorRuntime(first, connections[1]))
        await runtimes[0].start()
        reply = a_reply("chat", "c1", "hi")
        await queue(nc, reply)
        # The second process starts once the first is trying the reply: started earlier, it
        # could be handed the reply first, and the stalled process would never see it.
        async with asyncio.timeout(20):
            while not Stalled.begun:
                await asyncio.sleep(0.02)
        second = Stalled.from_config(settings)
        second.stall = False
        runtimes.append(ConnectorRuntime(second, connections[2]))
        await runtimes[1].start()
        async with asyncio.timeout(20):
            while len(Stalled.tries) < 2:
                await asyncio.sleep(0.02)
        found = await wait_for_outcome(nc.jetstream(), "chat", reply.reply_id, timeout=20)
        await _drained(nc, "connector_stallmem")
    finally:
        for runtime in runtimes:
            await runtime.stop()
        for conn in connections:
            with contextlib.suppress(Exception):
                await conn.close()
    assert Stalled.tries == [(reply.reply_id, False), (reply.reply_id, True)]
    assert isinstance(found.recorded, MessageSent), found.report.reason
