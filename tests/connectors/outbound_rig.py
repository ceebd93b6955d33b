"""A reply command for the outbound worker's tests, queuing it as the API does, a short ack wait,
and an SMS connector whose Twilio is a local fake."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig

from connectors.sdk.conformance import FakeProvider
from connectors.sdk.outbound import OutboundWorker
from connectors.sdk.runtime import ConnectorRuntime
from connectors.sms.connector import TwilioSmsConnector
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


async def queue(nc: NATS, reply: DeliverReply) -> int:
    """On ``rd.out.<channel>`` with the reply id as ``Nats-Msg-Id``, as the API queues it; its
    stream sequence."""
    ack = await nc.jetstream().publish(
        subjects.outbound(reply.channel), encode(reply), headers={"Nats-Msg-Id": reply.reply_id}
    )
    return ack.seq


def short_ack_wait(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every outbound worker's consumer with an ack wait of ``seconds`` (the holds it keeps too),
    so that a hold running out takes seconds in a test, not the default's half minute."""
    made = OutboundWorker._consumer_config

    def shortened(self: OutboundWorker) -> ConsumerConfig:
        config = dataclasses.replace(made(self), ack_wait=seconds)
        self.hold.ack_wait = seconds
        return config

    monkeypatch.setattr(OutboundWorker, "_consumer_config", shortened)


ACCOUNT = "AC" + "d" * 32


async def twilio_queued(_request: web.Request) -> web.StreamResponse:
    """Twilio's Messages API taking a message."""
    return web.json_response({"sid": "SM" + "e" * 32, "status": "queued"}, status=201)


async def sms_runtime(nc: NATS, fake: FakeProvider, **settings: Any) -> ConnectorRuntime:
    """A started SMS connector whose Twilio is ``fake``, with ``settings`` over its defaults."""
    connector = TwilioSmsConnector.from_config(
        {
            "port": 0,
            "auth_token": "tok",
            "account_sid": ACCOUNT,
            "from_number": "+15550000000",
            "api_base_url": fake.url + "/",
            "outbound_fetch_timeout": 0.3,
            **settings,
        }
    )
    runtime = ConnectorRuntime(connector, nc)
    await runtime.start()
    return runtime
