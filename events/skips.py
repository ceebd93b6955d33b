"""Failures a process steps past rather than stops on (an unsubscribe on a closing connection,
a dead letter's payload a role may not read, a key preload NATS did not answer). Each is logged
where it happens, naming what was skipped, and counted here by where it happened."""

from __future__ import annotations

from prometheus_client import Counter

SKIPPED = Counter(
    "relaydesk_skipped_total",
    "Work a process stepped past after a failure (logged where it happened), by where",
    ["where"],
)


def count_skip(where: str) -> None:
    SKIPPED.labels(where=where).inc()
