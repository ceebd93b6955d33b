"""The log ``relaydesk bench rebuild`` rebuilds from: customers of ~3 conversations each, every
conversation opened, a message in, routed, offered, accepted, assigned, replied to and sent,
sometimes a second exchange, resolved; sealed with a per-customer key and published as the
services write it (``write_log``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from services.bench import progress

AGENTS = [f"agent{i:03d}" for i in range(200)]
CHANNELS = ("sms", "email", "chat", "social")
TEXTS = (
    "Hello, I was charged twice for my order {n} last week and would like a refund of the second charge.",
    "My parcel {n} never arrived, the tracking page has said 'in transit' for nine days now.",
    "Can I change the delivery address of order {n}? I moved last month.",
)


def conversation_events(customer: str, n: int, clock: datetime, new_customer: bool) -> Iterator[Any]:
    """One conversation's events (10-14 of them), as the services write them."""
    from events.model import (
        AgentOffered,
        ConversationAssigned,
        ConversationOpened,
        ConversationResolved,
        CustomerCreated,
        DecisionReason,
        MessageReceived,
        MessageSent,
        OfferAccepted,
        ReplyRequested,
        Requirements,
        RoutingRequested,
    )

    channel = CHANNELS[n % len(CHANNELS)]
    contact = f"+1555{n % 10_000_000:07d}" if channel != "email" else f"person{n}@example.com"
    conversation = f"v{uuid.uuid4().hex[:16]}"
    agent = AGENTS[n % len(AGENTS)]
    reason = DecisionReason(rule="best_fit", step=0, score={"skill": 3.0, "load": -0.5, "idle": 1.0})
    t = clock

    def at() -> datetime:
        nonlocal t
        t += timedelta(seconds=7)
        return t

    ids: dict[str, Any] = {"customer_id": customer, "conversation_id": conversation}
    if new_customer:
        yield CustomerCreated(at=at(), customer_id=customer, identity=f"{channel}:{contact}")
    yield ConversationOpened(at=at(), **ids, channel=channel, contact=contact, provider_message_id=f"P{n}")
    yield MessageReceived(
        at=at(),
        **ids,
        channel=channel,
        message_id=f"m{n}",
        provider_message_id=f"P{n}",
        text=TEXTS[n % len(TEXTS)].format(n=n),
        language="en",
    )
    yield RoutingRequested(
        at=at(),
        **ids,
        channel=channel,
        requirements=Requirements(skills={"billing": 2}, language="en", priority=1, sla_due=t + timedelta(minutes=5)),
    )
    yield AgentOffered(at=at(), **ids, agent_id=agent, expires_at=t + timedelta(seconds=30), reason=reason)
    yield OfferAccepted(at=at(), **ids, agent_id=agent, actor=agent)
    yield ConversationAssigned(at=at(), **ids, agent_id=agent, channel=channel, reason=reason)
    exchanges = 1 + n % 2
    for k in range(exchanges):
        reply = f"r{n}x{k}"
        yield ReplyRequested(
            at=at(),
            **ids,
            channel=channel,
            reply_id=reply,
            agent_id=agent,
            text="Sorry about that! I have refunded the second charge.",
            actor=agent,
        )
        yield MessageSent(at=at(), **ids, channel=channel, reply_id=reply, provider_message_id=f"S{n}x{k}")
        if k + 1 < exchanges:
            yield MessageReceived(
                at=at(),
                **ids,
                channel=channel,
                message_id=f"m{n}y{k}",
                provider_message_id=f"P{n}y{k}",
                text="Thank you, that was quick.",
                language="en",
            )
    yield ConversationResolved(at=at(), **ids, agent_id=agent, actor=agent)


def log_events(total: int) -> Iterator[Any]:
    """About ``total`` events: customers of ~3 conversations each (so ~40 events a customer)."""
    clock = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    made = n = 0
    customer = ""
    while made < total:
        new = n % 3 == 0
        if new:
            customer = f"c{uuid.uuid4().hex[:16]}"
        for event in conversation_events(customer, n, clock + timedelta(seconds=n), new):
            if made >= total:
                return
            made += 1
            yield event
        n += 1


async def write_log(url: str, total: int, chunk: int = 5_000) -> tuple[int, float]:
    """Seal and publish ``total`` events; returns (events stored, seconds). Core publishes
    (the stream captures them) with one acked publish per chunk as a barrier: the fastest way
    to lay down a log, and the log is the same as the services write (sealed, Nats-Msg-Id)."""
    import nats

    from events import subjects
    from events.codec import encode
    from events.personal import CustomerKeys, PersonalDataCipher
    from events.store import MSG_ID
    from events.streams import ensure_streams

    started = time.perf_counter()
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        cipher = PersonalDataCipher(CustomerKeys(js))
        pending: list[Any] = []
        written = 0

        async def flush() -> None:
            nonlocal written
            sealed = await cipher.seal_many(pending)
            for event in sealed:
                if isinstance(event, Exception):
                    raise event
                await nc.publish(subjects.for_event(event), encode(event), headers={MSG_ID: uuid.uuid4().hex})
            written += len(pending)
            pending.clear()
            last = sealed[-1]
            assert not isinstance(last, Exception)
            await js.publish("rd.evt.a.bench-barrier", b"", timeout=60)  # an agent subject: not replayed
            progress.show(f"  writing the log: {written:,}/{total:,}", milestone=written % 100_000 < chunk)

        for event in log_events(total):
            pending.append(event)
            if len(pending) >= chunk:
                await flush()
        if pending:
            await flush()
        progress.done()
        state = (await js.stream_info(subjects.EVENTS_STREAM)).state
        customer_events = int(state.messages) - (total + chunk - 1) // chunk
        return customer_events, time.perf_counter() - started
    finally:
        await nc.drain()
