"""The SDK's outbound worker with an in-memory connector: retries, outcomes, poison messages,
and resuming after the nats-server restarts (nats.py pull subscriptions may not)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import nats
import pytest
import structlog.testing
from nats.aio.client import Client as NATS

from connectors.sdk import (
    Connector,
    DeliveryResult,
    PermanentDeliveryError,
    ProviderRequest,
    TransientDeliveryError,
)
from connectors.sdk.conformance import read_outcomes, wait_for_outcome
from connectors.sdk.publish import Reported
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import Channel, DeliverReply, DeliveryFailed, InboundMessage, MessageSent, ReplyOutcomeReported
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats

pytestmark = pytest.mark.integration


class Script:
    """What the fake provider does on each call for one contact."""

    def __init__(self) -> None:
        self.plans: dict[str, list[object]] = {}
        self.calls: list[DeliverReply] = []


class MemoryConnector(Connector):
    name: ClassVar[str] = "memory"
    channel: ClassVar[Channel] = "chat"
    provider: ClassVar[str] = "memory"
    script: Script

    def verify(self, request: ProviderRequest) -> None:
        return None

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return []

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        self.script.calls.append(reply)
        plan = self.script.plans.get(reply.contact, [])
        step = plan.pop(0) if plan else "ok"
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, DeliveryResult):
            return step
        return DeliveryResult.sent(f"prov-{len(self.script.calls)}")


@dataclass
class Rig:
    server: EmbeddedNats
    nc: NATS
    runtime: ConnectorRuntime
    script: Script

    async def send(self, contact: str = "c1", notice: str = "") -> DeliverReply:
        reply = DeliverReply(
            conversation_id="conv_" + uuid.uuid4().hex[:10],
            customer_id="cus_" + uuid.uuid4().hex[:10],
            channel="chat",
            reply_id="rep_" + uuid.uuid4().hex[:10],
            contact=contact,
            text="" if notice else "hi",
            notice=notice,
        )
        await self.nc.jetstream().publish(subjects.outbound("chat"), encode(reply))
        return reply

    async def outcome(self, reply: DeliverReply, timeout: float = 15.0) -> MessageSent | DeliveryFailed:
        """What intake will record, from the outcome reported on ``rd.inbound.chat``."""
        found = await wait_for_outcome(self.nc.jetstream(), "chat", reply.reply_id, timeout=timeout)
        return found.recorded


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    server = EmbeddedNats(store_dir=tmp_path / "js")
    await server.astart()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    await ensure_streams(nc.jetstream())
    connector = MemoryConnector.from_config(
        {"port": 0, "deliver_attempts": 3, "deliver_backoff": 0.01, "outbound_fetch_timeout": 0.3}
    )
    connector.script = Script()
    runtime = ConnectorRuntime(connector, nc)
    await runtime.start()
    try:
        yield Rig(server, nc, runtime, connector.script)
    finally:
        await runtime.stop()
        with contextlib.suppress(Exception):
            await nc.close()
        await server.astop()


async def test_sent_is_reported_on_inbound_and_acked(rig: Rig) -> None:
    reply = await rig.send()
    outcome = await rig.outcome(reply)
    assert isinstance(outcome, MessageSent)
    assert outcome.provider_message_id == "prov-1"
    assert outcome.reply_id == reply.reply_id
    assert (outcome.customer_id, outcome.conversation_id) == (reply.customer_id, reply.conversation_id)
    js = rig.nc.jetstream()
    # The work queue is empty once acked.
    async with asyncio.timeout(10):
        while (await js.stream_info(subjects.OUTBOUND_STREAM)).state.messages:
            await asyncio.sleep(0.05)
    [reported] = await read_outcomes(js, "chat", reply.reply_id)
    assert reported.msg_id == f"chat.outcome:{reply.reply_id}"
    # The connector wrote nothing to the log.
    assert (await js.stream_info(subjects.EVENTS_STREAM)).state.messages == 0


async def test_a_notice_is_shown_only_where_the_connector_shows_notices_and_reports_no_outcome(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    js = rig.nc.jetstream()

    async def drained() -> None:
        async with asyncio.timeout(10):
            while (await js.stream_info(subjects.OUTBOUND_STREAM)).state.messages:
                await asyncio.sleep(0.05)

    unshown = await rig.send("visitor", notice="resolved")  # MemoryConnector shows no notices
    await drained()
    assert rig.script.calls == []
    monkeypatch.setattr(MemoryConnector, "notices", frozenset({"resolved"}))
    shown = await rig.send("visitor", notice="resolved")
    await drained()
    assert [(c.reply_id, c.notice) for c in rig.script.calls] == [(shown.reply_id, "resolved")]
    assert rig.runtime.metrics["notices_shown"] == 1
    # Neither became a reply outcome: the log asked for no reply, so intake has nothing to record.
    reply = await rig.send()
    assert isinstance(await rig.outcome(reply), MessageSent)
    assert await read_outcomes(js, "chat", unshown.reply_id) == []
    assert await read_outcomes(js, "chat", shown.reply_id) == []


async def test_transient_errors_are_retried_then_fail(rig: Rig) -> None:
    rig.script.plans["flaky"] = [TimeoutError(), TransientDeliveryError("rate limited")]
    rig.script.plans["down"] = [TransientDeliveryError("503")] * 5
    ok = await rig.send("flaky")
    assert isinstance(await rig.outcome(ok), MessageSent)
    bad = await rig.send("down")
    failed = await rig.outcome(bad)
    assert isinstance(failed, DeliveryFailed)
    assert "503" in failed.reason and "3 attempts" in failed.reason
    assert [c.contact for c in rig.script.calls] == ["flaky"] * 3 + ["down"] * 3
    assert rig.runtime.metrics["delivery_retries"] == 4


async def test_permanent_failures_are_not_retried(rig: Rig) -> None:
    rig.script.plans["gone"] = [PermanentDeliveryError("number blocked")]
    rig.script.plans["bug"] = [RuntimeError("oops")]
    rig.script.plans["said-no"] = [DeliveryResult.failed("opted out")]
    for contact, reason in (("gone", "number blocked"), ("bug", "connector error"), ("said-no", "opted out")):
        outcome = await rig.outcome(await rig.send(contact))
        assert isinstance(outcome, DeliveryFailed)
        assert reason in outcome.reason
    assert len(rig.script.calls) == 3


async def test_undecodable_command_is_dropped_and_the_worker_goes_on(rig: Rig) -> None:
    await rig.nc.jetstream().publish(subjects.outbound("chat"), b'{"type": "deliver_reply", "nonsense": 1}')
    reply = await rig.send()
    assert isinstance(await rig.outcome(reply), MessageSent)


async def test_worker_resumes_after_server_restart(rig: Rig) -> None:
    assert isinstance(await rig.outcome(await rig.send()), MessageSent)
    await rig.server.astop()
    await asyncio.sleep(0.5)
    await rig.server.astart()  # same port, same store: streams and the durable survive
    async with asyncio.timeout(10):
        while not rig.nc.is_connected:
            await asyncio.sleep(0.05)
    reply = await rig.send()
    assert isinstance(await rig.outcome(reply), MessageSent)
    # Its consumer may still be re-subscribing after the restart a moment longer: it gets there.
    async with asyncio.timeout(10):
        while rig.runtime.worker is None or rig.runtime.worker.health()["state"] != "running":
            await asyncio.sleep(0.05)


async def test_stop_is_prompt_when_idle(rig: Rig) -> None:
    async with asyncio.timeout(3):
        await rig.runtime.stop()
    assert rig.runtime.worker is None


async def test_outcome_that_could_not_be_reported_is_not_sent_twice(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    real_report = rig.runtime.publisher.report
    failures = [ConnectionError("event bus unreachable")]

    async def flaky_report(report: ReplyOutcomeReported, trace: Mapping[str, str] | None = None) -> Reported:
        if failures:
            raise failures.pop()
        return await real_report(report, trace)

    monkeypatch.setattr(rig.runtime.publisher, "report", flaky_report)
    reply = await rig.send()
    outcome = await rig.outcome(reply)
    assert isinstance(outcome, MessageSent)
    assert not failures
    assert len(rig.script.calls) == 1  # redelivered, reported, not delivered again
    assert len(await read_outcomes(rig.nc.jetstream(), "chat", reply.reply_id)) == 1


async def test_a_worker_whose_connection_is_closed_for_good_stops_instead_of_retrying_forever(rig: Rig) -> None:
    """A connection closed under a running worker (its owner closed it without stopping the
    connector) left the worker fetching and warning every 5 s for the life of the process (one
    such leftover showed up in another test's captured warnings)."""
    worker = rig.runtime.worker
    assert worker is not None and worker._task is not None
    with structlog.testing.capture_logs() as logs:
        await rig.nc.close()
        async with asyncio.timeout(15):
            await asyncio.shield(worker._task)
    assert worker.health()["state"] == "stopped"
    failures = [line for line in logs if line["event"] == "outbound.fetch_failed"]
    assert len(failures) <= 1 and [line["event"] for line in logs if line["log_level"] == "error"] == [
        "outbound.connection_closed"
    ]
