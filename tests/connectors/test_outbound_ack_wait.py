"""A connector's outbound ack wait covers a fetch's wait: a hold counts from when the fetch's
request was sent (``events.pull.asked_at``), so with ``outbound_fetch_timeout`` near the ack
wait a reply handed over late in the wait counted as lapsed on arrival, was left unsent and,
handed over late again at each redelivery, was never sent."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from connectors.sdk import Connector, DeliveryResult, ProviderRequest
from connectors.sdk.hold import hold_margin
from connectors.sdk.outbound import OutboundWorker
from events.model import Channel, DeliverReply, InboundMessage
from events.pull import LOST_AFTER_S


class Quiet(Connector):
    name: ClassVar[str] = "quietmem"
    channel: ClassVar[Channel] = "chat"
    provider: ClassVar[str] = "quietmem"

    def verify(self, request: ProviderRequest) -> None:
        return None

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return []

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        return DeliveryResult.sent("x")


@pytest.mark.parametrize("fetch_timeout", [2.0, 25.0, 60.0])
def test_a_command_handed_over_at_the_end_of_a_fetch_wait_is_still_held(fetch_timeout: float) -> None:
    connector = Quiet.from_config({"port": 0, "outbound_fetch_timeout": fetch_timeout})
    nobody: Any = object()
    worker = OutboundWorker(connector, nobody, nobody, nobody, nobody)
    ack_wait = worker._consumer_config().ack_wait
    assert ack_wait is not None and ack_wait >= 30.0
    # The oldest a hold can be when a fetch returns, in a process that did not stall.
    assert fetch_timeout + LOST_AFTER_S < ack_wait - hold_margin(ack_wait)


class Held:
    """A fetched command: counts the renewals of its hold (``+WPI``)."""

    def __init__(self) -> None:
        self.subject = "rd.out.chat"
        self.renewed = 0

    async def in_progress(self) -> None:
        self.renewed += 1


async def test_waiting_commands_are_renewed_only_once_their_hold_has_aged() -> None:
    """Before each send every command still waiting in the batch was renewed (a batch of 10:
    up to 45 renewals); now only a hold older than a quarter of the ack wait is, and one that
    may have lapsed is left as it is."""
    connector = Quiet.from_config({"port": 0})
    nobody: Any = object()
    worker = OutboundWorker(connector, nobody, nobody, nobody, nobody)
    worker.hold.ack_wait = 40.0
    now = time.monotonic()
    msgs = [Held() for _ in range(4)]
    held = [now - 1.0, now - 11.0, now - 30.0, now - 39.0]  # fresh, aged, aged, may have lapsed
    await worker.hold.keep(msgs, held, 0)  # type: ignore[arg-type]
    assert [m.renewed for m in msgs] == [0, 1, 1, 0]
    assert held[0] == now - 1.0 and held[1] >= now and held[2] >= now and held[3] == now - 39.0
