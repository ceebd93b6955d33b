"""Every Prometheus metric of Relaydesk, in one place (prometheus_client's default registry).

Each process serves them at ``GET /metrics`` on its health port (``services.health``); the
API (operator token) and each connector's own port serve the same registry.

The registry is process-global: ``relaydesk up`` (and a test session) runs many services in one
process, so counters are labelled by what tells them apart (channel, reader, server), and a
reader compares before/after values rather than absolute ones.

Metrics ``events`` and ``connectors`` keep themselves (they never import ``services``) are
re-exported here so this module is the catalogue:

- ``relaydesk_events_appended_total{type}`` (events.counters, counted by ``EventStore``),
- ``relaydesk_quarantined_total{reader, stream}`` (events.quarantine),
- ``relaydesk_skipped_total{where}`` (events.skips),
- ``relaydesk_dead_letters_total{reader, stream}`` (connectors.sdk.deadletter),
- ``relaydesk_inbound_messages_total{channel, outcome}`` and the per-connector
  ``relaydesk_connector_*_total`` (connectors.sdk.metrics),
- ``relaydesk_intake_pending_messages`` / ``relaydesk_intake_oldest_pending_age_seconds``
  (services.intake.lag), ``relaydesk_intake_recorded_total{channel, new_customer}``
  (services.intake.consumer).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from connectors.sdk.deadletter import DEAD_LETTERS as DEAD_LETTERS
from connectors.sdk.metrics import HTTP_REQUEST_SECONDS as HTTP_REQUEST_SECONDS
from connectors.sdk.metrics import INBOUND_MESSAGES as INBOUND_MESSAGES
from connectors.sdk.metrics import http_metrics as http_metrics
from events.counters import EVENTS_APPENDED as EVENTS_APPENDED
from events.quarantine import QUARANTINED as QUARANTINED
from events.skips import SKIPPED as SKIPPED
from services.intake.consumer import RECORDED as INTAKE_RECORDED
from services.intake.lag import OLDEST_AGE as INTAKE_OLDEST_AGE
from services.intake.lag import PENDING as INTAKE_PENDING

__all__ = [
    "API_VIEW_LAG",
    "DEAD_LETTERS",
    "DECIDE_SECONDS",
    "DELIVERY_ATTEMPTS",
    "DELIVERY_FAILURES",
    "EVENTS_APPENDED",
    "HTTP_REQUEST_SECONDS",
    "INBOUND_MESSAGES",
    "INTAKE_OLDEST_AGE",
    "INTAKE_PENDING",
    "INTAKE_RECORDED",
    "LEADER",
    "OFFERS",
    "PROJECTOR_LAG",
    "QUARANTINED",
    "QUEUE_DEPTH",
    "QUEUE_OLDEST_WAIT",
    "ROUTING_DECISIONS",
    "SKIPPED",
    "http_metrics",
]

# -- router -------------------------------------------------------------------------

ROUTING_DECISIONS = Counter(
    "relaydesk_routing_decisions_total",
    "Routing decisions the active router appended and that stood (no conflict), by decision event",
    ["decision"],
)
DECIDE_SECONDS = Histogram(
    "relaydesk_routing_decide_seconds",
    "One routing round that decided something: the policy's decide() plus appending its decisions",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
QUEUE_DEPTH = Gauge(
    "relaydesk_queue_waiting",
    "Conversations waiting in a routing queue (set by the active router)",
    ["queue", "channel"],
)
QUEUE_OLDEST_WAIT = Gauge(
    "relaydesk_queue_oldest_wait_seconds",
    "How long the oldest conversation in a routing queue has waited (set by the active router)",
    ["queue", "channel"],
)
OFFERS = Counter(
    "relaydesk_offers_total",
    "Offer outcomes the router saw on the log after it caught up (offered, accepted, declined, expired)",
    ["outcome"],
)

# -- leadership (router, delivery) -------------------------------------------------------

LEADER = Gauge(
    "relaydesk_leader",
    "1 while this instance holds its lease and acts (router, delivery), 0 while it stands by; "
    "gone once it stops. No series at 1 for a lease: nobody routes (delivers), whatever else waits",
    ["lease", "instance"],
)

# -- delivery -----------------------------------------------------------------------

DELIVERY_ATTEMPTS = Counter(
    "relaydesk_delivery_attempts_total",
    "Tries to deliver a notice to an agent's endpoint, by endpoint kind and result (ok, failed)",
    ["kind", "result"],
)
DELIVERY_FAILURES = Counter(
    "relaydesk_delivery_failures_total",
    "Deliveries that failed for good (every try failed, or the endpoint is gone), by endpoint kind",
    ["kind"],
)

# -- API ----------------------------------------------------------------------------

API_VIEW_LAG = Gauge(
    "relaydesk_api_view_lag_events",
    "Events on the log the API's view has not folded yet (log end minus its position, at the last /readyz)",
)

# -- projector ----------------------------------------------------------------------

PROJECTOR_LAG = Gauge(
    "relaydesk_projector_lag_events",
    "Events on the log the projector has not folded yet (log end minus its checkpoint)",
    ["projector"],
)
