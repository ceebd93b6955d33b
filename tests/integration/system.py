"""Helpers for system tests: a real nats-server, services in-process, polling with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from events.model import ConversationOpened, MessageReceived, Requirements, RoutingRequested
from events.store import Append, EventStore

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 15.0, every: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; fail with a clear message after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: T | None = None
    while asyncio.get_running_loop().time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last probe: {last!r})")


async def open_conversation(
    store: EventStore,
    customer: str,
    conversation: str,
    *,
    channel: str = "sms",
    skills: dict[str, int] | None = None,
    language: str = "en",
    text: str = "hello",
) -> None:
    """What intake appends for a first message, written directly."""
    now = datetime.now(UTC)
    seq = await store.append(
        Append(
            ConversationOpened(
                at=now, customer_id=customer, conversation_id=conversation, channel=channel, contact="+15550000000"
            ),  # type: ignore[arg-type]
            expected=0,
        )
    )
    seq = await store.append(
        Append(
            MessageReceived(
                at=now,
                customer_id=customer,
                conversation_id=conversation,
                channel=channel,  # type: ignore[arg-type]
                message_id=f"m-{conversation}",
                provider_message_id=f"p-{conversation}",
                text=text,
                language=language,
            ),
            expected=seq,
        )
    )
    await store.append(
        Append(
            RoutingRequested(
                at=now,
                customer_id=customer,
                conversation_id=conversation,
                channel=channel,  # type: ignore[arg-type]
                requirements=Requirements(skills=skills or {"billing": 1}, language=language),
            ),
            expected=seq,
        )
    )
