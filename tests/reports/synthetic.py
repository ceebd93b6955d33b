"""A deterministic day of traffic (for the chart and the sample picture)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from events.model import Channel, CustomerCreated, LogEvent
from tests.reports.scenario import Conv

DAY0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
AGENTS = ("ava", "bruno", "chen", "dana")


def busy_day(prefix: str = "", seed: int = 5, conversations: int = 240) -> tuple[list[LogEvent], datetime]:
    """Conversations across a day, busiest around 10:00 and 15:00 UTC; waits grow with the load.
    Returns the events and the day's start (all offsets in ``Conv`` are from scenario.T0, so the
    builder is shifted by passing absolute offsets)."""
    rng = random.Random(seed)
    base = (DAY0 - datetime(2026, 11, 23, 10, 0, tzinfo=UTC)).total_seconds()
    events: list[LogEvent] = []
    weights = [1, 1, 1, 1, 1, 1, 2, 4, 7, 9, 10, 8, 6, 7, 9, 10, 8, 6, 4, 3, 2, 2, 1, 1]
    hours = rng.choices(range(24), weights=weights, k=conversations)
    for n, hour in enumerate(sorted(hours)):
        customer = f"{prefix}k{n % (conversations // 2)}"
        channel: Channel = rng.choice(("sms", "sms", "chat", "chat", "email", "social"))
        t = base + hour * 3600 + rng.uniform(0, 3599)
        load = weights[hour] / 10
        conv = Conv(customer, f"{prefix}conv{n}", channel)
        if n < conversations // 2:
            events.append(CustomerCreated(at=DAY0 + timedelta(seconds=0), customer_id=customer, identity=f"sms:{n}"))
        conv.open(t, {rng.choice(("billing", "technical", "general")): 1})
        wait = rng.expovariate(1 / (10 + 150 * load**2)) if channel != "email" else rng.uniform(60, 1500 * load + 60)
        agent = rng.choice(AGENTS)
        if channel in ("sms", "chat", "social"):
            if rng.random() < 0.15:
                conv.offer(t + wait / 3, "dana").decline(t + wait / 2, "dana")
            elif rng.random() < 0.1:
                conv.offer(t + wait / 4, "bruno").expire(t + wait / 2, "bruno")
            conv.offer(t + wait - 3, agent).accept(t + wait, agent)
        else:
            conv.assign(t + wait, agent)
        conv.reply(t + wait + rng.uniform(15, 240), agent)
        if rng.random() < 0.1:
            other = rng.choice([a for a in AGENTS if a != agent])
            conv.transfer(t + wait + 300, agent, other).assign(t + wait + 320, other)
        conv.resolve(t + wait + rng.uniform(300, 1800), agent)
        events.extend(conv.events)
    return events, DAY0
