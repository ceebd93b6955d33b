"""The sinks' Prometheus counters (process-global registry, labelled by sink)."""

from __future__ import annotations

from prometheus_client import Counter

SINK_EVENTS = Counter(
    "relaydesk_sink_events_total",
    "Log events a sink looked at, by outcome (handled, ignored, parked, retried)",
    ["sink", "outcome"],
)
SINK_API_CALLS = Counter(
    "relaydesk_sink_api_calls_total",
    "Calls to the helpdesk's API, by HTTP status (or 'error' when no answer came)",
    ["sink", "status"],
)
SINK_RATE_LIMITED = Counter(
    "relaydesk_sink_rate_limited_total",
    "429 answers from the helpdesk (each one waited out as its Retry-After said)",
    ["sink"],
)
SINK_AUTH_FAILURES = Counter(
    "relaydesk_sink_auth_failures_total",
    "401/403 answers from the helpdesk: the sink's credentials are wrong or revoked",
    ["sink"],
)
SINK_WEBHOOKS = Counter(
    "relaydesk_sink_webhooks_total",
    "Webhooks received from the helpdesk, by outcome (acted, ignored, refused, failed)",
    ["sink", "outcome"],
)
