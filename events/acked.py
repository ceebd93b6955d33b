"""A JetStream publish that waits for the stream's acknowledgement: what nats-py's
``JetStreamContext.publish`` does, with the acknowledgement decoded by msgspec into the two
fields the callers read (0.14 µs against ~4 µs for ``json.loads`` and nats-py's ``PubAck``
dataclass, measured on this project's machine). Every append to the log and every inbound
message a connector accepts pays it once."""

from __future__ import annotations

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import APIError, NoStreamResponseError


class Ack(msgspec.Struct):
    """What JetStream answers a publish: the message's stream sequence and whether it was a
    duplicate (an earlier publish with the same ``Nats-Msg-Id`` within the window); or an error."""

    seq: int = 0
    duplicate: bool = False
    stream: str = ""
    error: dict[str, object] | None = None


_decode = msgspec.json.Decoder(Ack).decode


async def publish_acked(
    nc: NATS, subject: str, payload: bytes, *, timeout: float, headers: dict[str, str] | None = None
) -> Ack:
    """Publish and wait up to ``timeout`` s for the stream's acknowledgement. Raises as
    ``JetStreamContext.publish`` does: nats-py's ``TimeoutError``, ``NoStreamResponseError``
    (no stream takes the subject) or the ``APIError`` subclass of the stream's refusal."""
    try:
        msg = await nc.request(subject, payload, timeout=timeout, headers=headers)
    except nats.errors.NoRespondersError:
        raise NoStreamResponseError from None
    ack = _decode(msg.data)
    if ack.error is not None:
        APIError.from_error(ack.error)  # raises the error's own class (400, 503, …)
    return ack
