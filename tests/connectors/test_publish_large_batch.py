"""A provider's batch (a Meta webhook carries many messages) is answered 200 once JetStream acked
every message. One deadline for the whole batch failed any batch larger than what NATS acks
within it: a signed Meta batch of 60,000 items was a 503 every time Meta sent it again, for as
long as Meta retried. Each window of the batch now has the ack's deadline."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from connectors.sdk import publish
from connectors.sdk.publish import InboundPublisher
from events import subjects
from events.model import InboundMessage

pytestmark = pytest.mark.integration


def batch_of(count: int) -> list[InboundMessage]:
    now = datetime.now(UTC)
    return [
        InboundMessage(
            at=now, channel="social", provider="meta", provider_message_id=f"m.{i}", sender=f"psid-{i % 50}", text="hi"
        )
        for i in range(count)
    ]


async def test_a_batch_larger_than_one_deadline_allows_is_acked_whole(
    clean_nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish, "PUBLISH_WINDOW", 200)
    # A deadline a window fits in many times over, the whole batch not (it would take acks at
    # 20,000 a second; NATS gives a few thousand to ~11,000 here).
    publisher = InboundPublisher(clean_nc, ack_timeout=1.0)
    messages = batch_of(30_000)
    published = await publisher.publish(messages)
    assert len(published) == len(messages)
    info = await clean_nc.jetstream().stream_info(subjects.INBOUND_STREAM)
    assert info.state.messages == len(messages)
    # The provider sends (part of) it again: duplicates, none stored twice.
    again = await publisher.publish(messages[:2_000])
    assert len(again) == 2_000
    info = await clean_nc.jetstream().stream_info(subjects.INBOUND_STREAM)
    assert info.state.messages == len(messages)
