"""A provider's batch (a Meta webhook carries many messages) is answered 200 once JetStream acked
every message. One deadline for the whole batch failed any batch larger than what NATS acks
within it: a signed Meta batch of 60,000 items was a 503 every time Meta sent it again, for as
long as Meta retried. Each window of the batch now has the ack's deadline."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from connectors.sdk import publish
from connectors.sdk.publish import InboundPublisher, Published
from events import subjects
from events.model import InboundMessage


def batch_of(count: int) -> list[InboundMessage]:
    now = datetime.now(UTC)
    return [
        InboundMessage(
            at=now, channel="social", provider="meta", provider_message_id=f"m.{i}", sender=f"psid-{i % 50}", text="hi"
        )
        for i in range(count)
    ]


async def test_a_batch_nats_takes_longer_than_one_deadline_to_ack_is_acked_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NATS as a queue that acks one message at a time, 2 ms each: 2,000 messages take 4 s,
    more than the 1.5 s one deadline allowed; a window of 100 takes 0.2 s."""
    monkeypatch.setattr(publish, "PUBLISH_WINDOW", 100)
    one_at_a_time = asyncio.Lock()
    acked: list[str] = []

    async def throttled(self: InboundPublisher, message: InboundMessage, payload: bytes) -> Published:
        async with one_at_a_time:
            await asyncio.sleep(0.002)
        acked.append(message.provider_message_id)
        return Published(message=message, seq=len(acked), duplicate=False)

    monkeypatch.setattr(InboundPublisher, "_publish_one", throttled)
    open_connection = type("Open", (), {"is_closed": False})()
    publisher = InboundPublisher(open_connection, ack_timeout=1.0)  # type: ignore[arg-type]
    messages = batch_of(2_000)
    published = await publisher.publish(messages)
    assert len(published) == len(messages)
    assert acked == [m.provider_message_id for m in messages]


@pytest.mark.integration
async def test_a_large_batch_is_stored_once_and_its_retry_adds_nothing(clean_nc: NATS) -> None:
    publisher = InboundPublisher(clean_nc)
    messages = batch_of(5_000)
    assert len(await publisher.publish(messages)) == len(messages)
    again = await publisher.publish(messages[:1_000])  # the provider sends part of it again
    assert len(again) == 1_000 and all(p.duplicate for p in again)
    info = await clean_nc.jetstream().stream_info(subjects.INBOUND_STREAM)
    assert info.state.messages == len(messages)
