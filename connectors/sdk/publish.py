"""Publishing inbound messages: ``Nats-Msg-Id`` dedupe, and success only after every ack."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from events import subjects
from events.codec import encode
from events.model import InboundMessage

from .errors import Unavailable

MSG_ID = "Nats-Msg-Id"


def msg_id(message: InboundMessage) -> str:
    """The dedupe id: ``<channel>:<provider message id>``."""
    return f"{message.channel}:{message.provider_message_id}"


@dataclass(frozen=True)
class Published:
    message: InboundMessage
    seq: int
    duplicate: bool


class InboundPublisher:
    def __init__(self, nc: NATS, js: JetStreamContext | None = None, *, ack_timeout: float = 5.0) -> None:
        self.nc = nc
        self.js = js or nc.jetstream()
        self.ack_timeout = ack_timeout

    async def publish_one(self, message: InboundMessage) -> Published:
        ack = await self.js.publish(
            subjects.inbound(message.channel),
            encode(message),
            timeout=self.ack_timeout,
            headers={MSG_ID: msg_id(message)},
        )
        return Published(message, int(ack.seq), bool(ack.duplicate))

    async def publish(self, messages: Sequence[InboundMessage]) -> list[Published]:
        """Publish all concurrently; return only when JetStream acknowledged each one.
        Any failure (timeout, disconnected, no stream, error) raises ``Unavailable``: the
        provider must retry, and dedupe makes the retry of the acked ones harmless."""
        if not messages:
            return []
        if self.nc.is_closed:
            raise Unavailable("event bus connection is closed")
        try:
            async with asyncio.timeout(self.ack_timeout + 0.5):
                results = await asyncio.gather(*(self.publish_one(m) for m in messages), return_exceptions=True)
        except TimeoutError as err:
            raise Unavailable("event bus did not acknowledge in time") from err
        out: list[Published] = []
        for result in results:
            if isinstance(result, (TimeoutError, NatsError, OSError)):
                raise Unavailable(f"event bus did not acknowledge: {type(result).__name__}") from result
            if isinstance(result, BaseException):
                raise result
            out.append(result)
        return out
