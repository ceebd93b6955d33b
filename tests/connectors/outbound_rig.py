"""A reply command for the outbound worker's tests, and queuing it as the API does."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NATS

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
