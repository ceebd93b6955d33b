"""Counters the event store keeps (prometheus_client, beside quarantine's and skips').

Defined here, not in ``services.metrics``, because ``events`` never imports ``services``;
``services.metrics`` lists them with every other metric."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_APPENDED = Counter(
    "relaydesk_events_appended_total",
    "Events this process appended to the log (acknowledged by JetStream), by event type",
    ["type"],
)


def count_append(event: object) -> None:
    EVENTS_APPENDED.labels(type=type(event).__name__).inc()
