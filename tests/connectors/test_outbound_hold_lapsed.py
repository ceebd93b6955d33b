"""A reply whose ack wait ran out while this connector process held it unseen is not sent by it
(found by a chaos audit: a connector process stopped with SIGSTOP for longer than the ack wait,
with a reply already handed to it, went on to send that reply when it resumed, after NATS had
given it to the channel's other process, which had sent it: the customer got it twice).

The same happens to the commands at the end of a fetched batch when the deliveries ahead of them
take longer than the ack wait together (each is sent in turn). Here: a short ack wait, a slow
provider and two processes of one channel sharing the durable, on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from connectors.sdk import Connector, DeliveryResult, ProviderRequest
from connectors.sdk.conformance import read_outcomes
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import Channel, DeliverReply, InboundMessage
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from tests.connectors.outbound_rig import short_ack_wait

pytestmark = pytest.mark.integration

# Seconds; each delivery below takes less, the batch as a whole more. Short, so the tests are;
# not shorter, so that a busy machine (CI shares it) does not let a hold run out mid-send.
ACK_WAIT = 3.0


class SlowConnector(Connector):
    """A provider answering each send after ``seconds``; every process records its own calls."""

    name: ClassVar[str] = "slowmem"
    channel: ClassVar[Channel] = "chat"
    provider: ClassVar[str] = "slowmem"
    seconds: float
    slow: dict[str, float]  # reply id -> seconds for that one
    calls: list[str]

    def verify(self, request: ProviderRequest) -> None:
        return None

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return []

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        self.calls.append(reply.reply_id)
        await asyncio.sleep(self.slow.get(reply.reply_id, self.seconds))
        return DeliveryResult.sent(f"prov-{reply.reply_id}")


async def _process(
    url: str, seconds: float, slow: dict[str, float] | None = None, fetch_timeout: float = 0.3
) -> tuple[NATS, ConnectorRuntime, SlowConnector]:
    nc = await nats.connect(url)
    connector = SlowConnector.from_config({"port": 0, "outbound_batch": 10, "outbound_fetch_timeout": fetch_timeout})
    connector.seconds, connector.slow, connector.calls = seconds, slow or {}, []
    runtime = ConnectorRuntime(connector, nc)
    await runtime.start()
    return nc, runtime, connector


@pytest.mark.parametrize("stall", ["slow_batch", "stalled_process"])
async def test_a_command_whose_ack_wait_ran_out_in_this_process_is_not_sent_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stall: str
) -> None:
    """``slow_batch``: each send takes 0.8 s, five in one batch; the process keeps the holds of
    those waiting their turn. ``stalled_process``: the first send takes longer than the ack
    wait (as a process stopped or starved does), so the holds of the four behind it run out;
    NATS hands them to the other process, and this one must not send them too. (The first
    reply itself, its call still under way when its ack wait ran out, may go twice: at least
    once, see README's Decisions.)"""
    short_ack_wait(monkeypatch, ACK_WAIT)
    server = EmbeddedNats(store_dir=tmp_path / "js")
    await server.astart()
    processes: list[tuple[NATS, ConnectorRuntime, SlowConnector]] = []
    try:
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream())
        replies = [
            DeliverReply(
                conversation_id="conv_" + uuid.uuid4().hex[:10],
                customer_id="cus_" + uuid.uuid4().hex[:10],
                channel="chat",
                reply_id=f"rep_{n}_" + uuid.uuid4().hex[:8],
                contact="c1",
                text="hi",
            )
            for n in range(5)
        ]
        if stall == "slow_batch":
            first = await _process(server.url, seconds=0.8)
        else:
            first = await _process(server.url, seconds=0.05, slow={replies[0].reply_id: ACK_WAIT * 1.5})
        processes.append(first)
        for reply in replies:  # one batch for the first process: 5 × 0.8 s > the ack wait
            await nc.jetstream().publish(subjects.outbound("chat"), encode(reply))
        await _eventually(lambda: first[2].calls, "the first process has its batch")
        processes.append(await _process(server.url, seconds=0.05))  # the channel's other process

        async def every_outcome_reported() -> bool:
            found = [await read_outcomes(nc.jetstream(), "chat", r.reply_id) for r in replies]
            return all(found)

        await _eventually(every_outcome_reported, "an outcome for every reply", timeout=60)
        # The first process has been through its whole batch (sent or left each).
        await _eventually(lambda: _done_with_batch(first[1]), "the first process idle again", timeout=60)
        calls = first[2].calls + processes[1][2].calls
        once = [r.reply_id for r in replies] if stall == "slow_batch" else [r.reply_id for r in replies[1:]]
        assert sorted(c for c in calls if c in once) == sorted(once), calls
    finally:
        await _stop_all(processes, nc, server)


async def _stop_all(processes: list[Any], nc: NATS, server: Any) -> None:
    """Stop every connector process, close the connections (already closed by a stop: fine), stop the server."""
    for pnc, runtime, _ in processes:
        await runtime.stop()
        with contextlib.suppress(Exception):
            await pnc.close()
    with contextlib.suppress(Exception):
        await nc.close()
    await server.astop()


async def test_a_reply_read_late_after_a_stall_is_left_to_the_process_nats_gave_it_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes of the channel wait with a request open; the reply is handed to one; then
    everything here stalls past the ack wait (the loop blocked, as SIGSTOP, a VM pause or
    starvation does), so NATS hands the reply to the other one's open request meanwhile. Each
    reads its copy late, from the socket: neither may send it then (its ack wait ran from the
    handing over, not from the reading). It goes out once, to whoever NATS gives it next."""
    short_ack_wait(monkeypatch, ACK_WAIT)
    server = EmbeddedNats(store_dir=tmp_path / "js")
    await server.astart()
    processes: list[tuple[NATS, ConnectorRuntime, SlowConnector]] = []
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js)
        for _ in range(2):
            # Requests open past the ack wait, but their wait here ends within the stall.
            processes.append(await _process(server.url, seconds=0.05, fetch_timeout=ACK_WAIT * 1.25))

        async def both_waiting() -> bool:
            try:
                info = await js.consumer_info(subjects.OUTBOUND_STREAM, "connector_slowmem")
            except NotFoundError:  # not made yet
                return False
            return (info.num_waiting or 0) >= 2

        await _eventually(both_waiting, "both processes waiting with a request open")
        reply = DeliverReply(
            conversation_id="conv_" + uuid.uuid4().hex[:10],
            customer_id="cus_" + uuid.uuid4().hex[:10],
            channel="chat",
            reply_id="rep_" + uuid.uuid4().hex[:8],
            contact="c1",
            text="hi",
        )
        # The stall begins before the reply is published: published from here, the loop ran while
        # it waited for the ack, and a process could read the reply and start sending it before
        # the stall (a send under way when its hold runs out may go twice: at least once).
        _stall_while_published(server.url, reply, ACK_WAIT * 2.25)

        async def reported() -> bool:
            return bool(await read_outcomes(js, "chat", reply.reply_id))

        await _eventually(reported, "the reply's outcome", timeout=30)
        await _eventually(lambda: all(_done_with_batch(p[1]) for p in processes), "both idle again", timeout=30)
        calls = [c for p in processes for c in p[2].calls]
        assert calls == [reply.reply_id]
    finally:
        await _stop_all(processes, nc, server)


def _stall_while_published(url: str, reply: DeliverReply, stall: float) -> None:
    """Block this thread's event loop (every connector process here) while another thread
    publishes ``reply`` and then for ``stall`` seconds more."""

    async def publish() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().publish(subjects.outbound("chat"), encode(reply))
        finally:
            await nc.close()

    failed: list[BaseException] = []

    def publish_then_wait() -> None:
        try:
            asyncio.run(publish())
        except BaseException as err:  # raised in the test's thread below
            failed.append(err)
            return
        time.sleep(stall)

    publisher = threading.Thread(target=publish_then_wait, name="stall-publisher")
    publisher.start()
    publisher.join()  # the stall itself: nothing on this loop runs meanwhile
    if failed:
        raise failed[0]


def _done_with_batch(runtime: ConnectorRuntime) -> bool:
    worker = runtime.worker
    return worker is not None and worker._idle


async def _eventually(probe: Any, what: str, timeout: float = 15.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while True:
                found = probe()
                if asyncio.iscoroutine(found):
                    found = await found
                if found:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None
