"""Every Prometheus metric of Relaydesk, in one place (prometheus_client's default registry).

Each process serves them at ``GET /metrics`` on its health port (``services.health``); the
API (operator token) and each connector's own port serve the same registry.

The registry is process-global: ``relaydesk up`` (and a test session) runs many services in one
process, so counters are labelled by what tells them apart (channel, reader, server), and a
reader compares before/after values rather than absolute ones.

Which process exports what: a metric is exported only by a process that measures it, so a
series missing from a scrape means "not measured here", never a made-up 0 (``absent()`` alerts
rely on it). A labelled metric exports no series until a label set is used, so it needs nothing
more: the queue gauges, ``relaydesk_leader`` and the routing counters appear on routers (and
``relaydesk_leader`` on delivery), the delivery counters on delivery, the projector lag on the
projector (and the API, for the default projection), ``relaydesk_projector_stalled_seconds`` on
the projector, ``relaydesk_parked_messages`` on the API (from the first message it sees parked:
``services.dlq.export_parked``), the inbound and connector counters on connectors, the sink
counters on sinks, and the shared ones (events appended, quarantined, skipped, dead letters,
HTTP latencies) wherever it happens. An unlabelled metric is exported at 0
from the moment it is registered, so each one only one kind of process measures is made with
``registry=None`` and registered by that process through ``measured()`` (idempotent: ``relaydesk
up`` exports each once):

- ``relaydesk_intake_pending_messages`` / ``relaydesk_intake_oldest_pending_age_seconds``:
  intake (``services.intake.lag.export_forever``) and the API (at each ``/readyz``), from their
  first reading of the consumer on;
- ``relaydesk_api_view_lag_events``: the API, from its first ``/readyz`` on;
- ``relaydesk_erasures_undone``: the projector of partition 0, from its first comparison of the
  erasure register with the log (``services.erasures_undone``) on;
- ``relaydesk_routing_decide_seconds`` (histogram): routers, from their start;
- ``relaydesk_agent_tokens_refused_total`` (services.api.tokens) and
  ``relaydesk_api_language_reason_unread_total`` (services.api.views): the API, from its start.

Metrics ``events`` and ``connectors`` keep themselves (they never import ``services``) are
re-exported here so this module is the catalogue:

- ``relaydesk_events_appended_total{type}`` (events.counters, counted by ``EventStore``),
- ``relaydesk_quarantined_total{reader, stream}`` (events.quarantine),
- ``relaydesk_skipped_total{where}`` (events.skips),
- ``relaydesk_dead_letters_total{reader, stream}`` (connectors.sdk.deadletter),
- ``relaydesk_inbound_messages_total{channel, outcome}`` and the per-connector
  ``relaydesk_connector_*_total`` (connectors.sdk.metrics),
- ``relaydesk_intake_recorded_total{channel, new_customer}`` (services.intake.consumer).
"""

from __future__ import annotations

import threading
from typing import TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from connectors.sdk.deadletter import DEAD_LETTERS as DEAD_LETTERS
from connectors.sdk.metrics import HTTP_REQUEST_SECONDS as HTTP_REQUEST_SECONDS
from connectors.sdk.metrics import INBOUND_MESSAGES as INBOUND_MESSAGES
from connectors.sdk.metrics import http_metrics as http_metrics
from events.counters import EVENTS_APPENDED as EVENTS_APPENDED
from events.quarantine import QUARANTINED as QUARANTINED
from events.skips import SKIPPED as SKIPPED
from services.intake.consumer import RECORDED as INTAKE_RECORDED

__all__ = [
    "API_VIEW_LAG",
    "DEAD_LETTERS",
    "DECIDE_SECONDS",
    "DELIVERY_ATTEMPTS",
    "DELIVERY_FAILURES",
    "ERASURE_NOTICES",
    "EVENTS_APPENDED",
    "HTTP_REQUEST_SECONDS",
    "INBOUND_MESSAGES",
    "INTAKE_OLDEST_AGE",
    "INTAKE_PENDING",
    "INTAKE_RECORDED",
    "LEADER",
    "MEASURED_AT",
    "OFFERS",
    "OPERATOR_TABLE_RELOADS",
    "PARKED",
    "PROJECTOR_LAG",
    "PROJECTOR_STALLED",
    "QUARANTINED",
    "QUEUE_DEPTH",
    "QUEUE_OLDEST_WAIT",
    "RETENTION_EXPIRED",
    "RETENTION_SWEEPS",
    "ROUTING_DECISIONS",
    "SKIPPED",
    "http_metrics",
    "measured",
]

M = TypeVar("M", bound=Collector)

_measured: set[Collector] = set()
_measured_lock = threading.Lock()


def measured(metric: M) -> M:
    """``metric`` registered in the default registry, once per process (idempotent, thread-safe),
    and returned: what the process that measures a metric calls, for a metric made with
    ``registry=None`` because only one kind of process measures it.

    An unlabelled metric is exported from its definition on, at 0: defined at import time in
    the default registry, every process that imports it (all of them, through the CLI) showed
    ``relaydesk_api_view_lag_events 0`` or ``relaydesk_intake_pending_messages 0``, so
    ``absent()`` never fired and a process that never measured intake lag said there was none
    (found by an observability audit). A gauge is registered where it is first set (it has no
    value before); a counter or histogram when its owner starts (a count of 0 from then on is
    true, and ``rate()`` sees its first increase). ``relaydesk up`` runs every service in one
    process: each metric is still registered, and exported, once. Labelled metrics need none of
    this: they export no series until a label set is used."""
    if metric in _measured:
        return metric
    with _measured_lock:
        if metric not in _measured:
            REGISTRY.register(metric)
            _measured.add(metric)
    return metric


# -- router -------------------------------------------------------------------------

ROUTING_DECISIONS = Counter(
    "relaydesk_routing_decisions_total",
    "Routing decisions the active router appended and that stood (no conflict), by decision event",
    ["decision"],
)
DECIDE_SECONDS = Histogram(  # the router's: measured(DECIDE_SECONDS) when it starts
    "relaydesk_routing_decide_seconds",
    "One routing round that decided something: the policy's decide() plus appending its decisions",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=None,
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
ERASURE_NOTICES = Counter(
    "relaydesk_delivery_erasure_notices_total",
    "customer.erased notices to agents' tools (webhooks, Slack app), by endpoint kind and outcome "
    "(delivered, failed: dead-lettered, retried by POST /v1/deliveries/{id}/retry)",
    ["kind", "outcome"],
)

# -- API ----------------------------------------------------------------------------

API_VIEW_LAG = Gauge(  # the API's: measured(API_VIEW_LAG).set(…) at /readyz
    "relaydesk_api_view_lag_events",
    "Events on the log the API's view has not folded yet (log end minus its position, at the last /readyz)",
    registry=None,
)

OPERATOR_TABLE_RELOADS = Counter(
    "relaydesk_api_operator_table_reloads_total",
    "Times the API read [api.operators] again because its config file changed: reloaded (the new "
    "table serves), unchanged (other settings changed; they need a restart), refused (the file has "
    "problems; the table before serves on)",
    ["outcome"],
)

# -- intake (set by services.intake.lag: in intake, and in the API at /readyz) ------

INTAKE_PENDING = Gauge(
    "relaydesk_intake_pending_messages",
    "Inbound messages not yet recorded by intake: not delivered yet plus delivered and not acked",
    registry=None,
)
INTAKE_OLDEST_AGE = Gauge(
    "relaydesk_intake_oldest_pending_age_seconds",
    "Age of the oldest inbound message intake has not recorded yet (0 when none waits)",
    registry=None,
)

# -- projector ----------------------------------------------------------------------

PROJECTOR_LAG = Gauge(
    "relaydesk_projector_lag_events",
    "Events on the log the projector has not folded yet (log end minus its checkpoint)",
    ["projector"],
)
PROJECTOR_STALLED = Gauge(
    "relaydesk_projector_stalled_seconds",
    "Seconds the projector's position has not moved while events wait for it (0 while it is "
    "caught up or advancing; at each of its health checks)",
    ["projector"],
)

ERASURES_UNDONE = Gauge(  # the projector's (partition 0): measured(ERASURES_UNDONE) at its first check
    "relaydesk_erasures_undone",
    "Customers the erasure register (the timelines store) says were erased whose CustomerErased is "
    "not on the log any more: NATS restored from a backup taken before the erasure. "
    "relaydesk customers erase-again erases them again",
    registry=None,
)

# -- relaydesk up (services.supervision) ---------------------------------------------

SERVICE_RESTARTS = Counter(
    "relaydesk_up_service_restarts_total",
    "Services relaydesk up started again after NATS did not answer in time (services.supervision)",
    ["service"],
)

# -- retention ([retention] message_days, services.retention) ------------------------

RETENTION_SWEEPS = Counter(
    "relaydesk_retention_sweeps_total",
    "Retention sweeps of message bodies past [retention] message_days, by what they sweep "
    "(day_keys, parked: the API; timelines: the projector) and outcome (ok, failed: tried again next time)",
    ["what", "outcome"],
)
RETENTION_EXPIRED = Counter(
    "relaydesk_retention_expired_total",
    "What retention made unreadable: day keys erased (day_keys), parked records dropped (parked), "
    "timeline entries whose text now reads [expired] (timelines)",
    ["what"],
)

# -- parked messages (set by the API, services.dlq.export_parked) ---------------------

# Labelled, so no series before a first reading; the process that measures sets it at each.
MEASURED_AT = Gauge(
    "relaydesk_measured_timestamp_seconds",
    "When a gauge measured from NATS (intake_lag, parked) was last read successfully (Unix time): "
    "while NATS is away those gauges keep their last value, and this says how old it is",
    ["what"],
)
PARKED = Gauge(
    "relaydesk_parked_messages",
    "Messages parked now in rd_parked (dead letters and quarantined events not yet retried or "
    "dropped), by kind, the stream they came from and the reader that parked them",
    ["kind", "stream", "reader"],
)
