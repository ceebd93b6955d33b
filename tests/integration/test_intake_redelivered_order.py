"""A sender's message redelivered after an intake crash is recorded before that sender's later
messages, not after them. Found by an operator's kill -9 during a burst: the dead process held
message 3; the new one took 4 to 7 first, each waited for 3 while holding the sender's turn, 3
(redelivered 5 s later) queued behind them all, and each later one gave up after 5 s: the
customer's messages came out 0,1,2,4,5,6,7,3, the last 21 s late."""

from __future__ import annotations

import asyncio
import contextvars
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.model import InboundMessage, MessageReceived
from events.store import EventStore
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.identity.addresses import identity_for
from services.intake import Intake
from services.intake.consumer import STREAM_SEQ

pytestmark = pytest.mark.integration

PHONE = "+15551230077"


def sms(n: int) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC),
        channel="sms",
        provider="twilio",
        provider_message_id=f"SMorder{n}",
        sender=PHONE,
        text=f"message {n}",
    )


def delivered(intake: Intake, n: int, earlier: tuple[tuple[str, str], ...] = ()) -> asyncio.Task[str | None]:
    """Message ``n`` handled as ``settle`` hands it over: stream sequence ``n`` in its task."""
    context = contextvars.copy_context()
    context.run(STREAM_SEQ.set, n)
    return asyncio.create_task(intake.handle(sms(n), earlier=earlier), context=context)


async def test_a_redelivered_earlier_message_goes_before_the_later_ones_held_here(
    clean_nc: NATS, log_lines: list[dict[str, Any]]
) -> None:
    nc, events = clean_nc, EventStore(clean_nc, clean_nc.jetstream())
    directory = IdentityDirectory(await nc.jetstream().key_value(subjects.IDENTITY_BUCKET))
    intake = Intake(events, directory, IntakeSettings())
    for n in range(3):
        await delivered(intake, n)
    # 4 to 7 reach this process while message 3 is still held by one that died (the ordering
    # window names it as earlier for each of them) ...
    three = ("sms", "SMorder3")
    later = [delivered(intake, n, earlier=(three,)) for n in range(4, 8)]
    await asyncio.sleep(0)  # each registers before its first await
    # ... then 3 comes back, redelivered to this process.
    await asyncio.gather(delivered(intake, 3), *later)

    customer_id = await directory.lookup(identity_for("sms", PHONE))
    assert customer_id is not None
    texts = [e.event.text for e in await events.read_customer(customer_id) if isinstance(e.event, MessageReceived)]
    assert texts == [f"message {n}" for n in range(8)]
    assert [line for line in log_lines if line["event"] == "intake.order_wait_expired"] == []


async def test_a_sender_whose_earlier_message_never_comes_is_recorded_after_the_wait(
    clean_nc: NATS, log_lines: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other process's message was dropped: the later ones go on, in their own order."""
    monkeypatch.setattr("services.intake.consumer.ORDER_WAIT_S", 0.3)
    nc, events = clean_nc, EventStore(clean_nc, clean_nc.jetstream())
    directory = IdentityDirectory(await nc.jetstream().key_value(subjects.IDENTITY_BUCKET))
    intake = Intake(events, directory, IntakeSettings())
    gone = ("sms", "SMorder3")
    await asyncio.gather(*(delivered(intake, n, earlier=(gone,)) for n in range(4, 7)))
    customer_id = await directory.lookup(identity_for("sms", PHONE))
    assert customer_id is not None
    texts = [e.event.text for e in await events.read_customer(customer_id) if isinstance(e.event, MessageReceived)]
    assert texts == ["message 4", "message 5", "message 6"]
    # Intake's own warnings (another test's leftover in this process may log too).
    warned = {line["event"] for line in log_lines if line["log_level"] == "warning"}
    assert {event for event in warned if event.startswith("intake.")} == {"intake.order_wait_expired"}
