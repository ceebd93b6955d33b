"""A reply command for the outbound worker's tests, queuing it as the API does, and a short ack wait."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig

from connectors.sdk.outbound import OutboundWorker
from events import subjects
from events.codec import encode
from events.model import Channel, DeliverReply


def a_reply(channel: Channel, contact: str, text: str = "Your refund is on its way") -> DeliverReply:
    """A reply of a conversation and customer of its own."""
    return DeliverReply(
        conversation_id="conv_" + uuid.uuid4().hex[:10],
        customer_id="cus_" + uuid.uuid4().hex[:10],
        channel=channel,
        reply_id="rep_" + uuid.uuid4().hex[:10],
        contact=contact,
        text=text,
    )


async def queue(nc: NATS, reply: DeliverReply) -> None:
    """On ``rd.out.<channel>`` with the reply id as ``Nats-Msg-Id``, as the API queues it."""
    await nc.jetstream().publish(
        subjects.outbound(reply.channel), encode(reply), headers={"Nats-Msg-Id": reply.reply_id}
    )


def short_ack_wait(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every outbound worker's consumer with an ack wait of ``seconds`` (the holds it keeps too),
    so that a hold running out takes seconds in a test, not the default's half minute."""
    made = OutboundWorker._consumer_config

    def shortened(self: OutboundWorker) -> ConsumerConfig:
        config = dataclasses.replace(made(self), ack_wait=seconds)
        self.hold.ack_wait = seconds
        return config

    monkeypatch.setattr(OutboundWorker, "_consumer_config", shortened)
