"""A connector's counters, on prometheus_client's default registry (``GET /metrics``).

Two views of the same counts:

- ``relaydesk_connector_<name>_total{connector, channel}`` (and ``kind`` on rejections): the
  connector's counters, totalled over every ``Metrics`` of that connector the process has had
  (kept here, so they never go down when an instance goes; a collector renders them at scrape
  time). ``Metrics`` also answers ``metrics["published"]`` for one instance, as the SDK's tests
  and conformance kit read it, and renders that instance alone on the connector's own port.
- ``relaydesk_inbound_messages_total{channel, outcome}``: every channel's inbound outcomes
  (received, published, duplicate, rejected, unavailable) as ordinary Counters, for dashboards
  across connectors.

Plus ``relaydesk_http_request_seconds{server, method, route, status}``: an aiohttp middleware
(``http_metrics``) the connectors' servers and the API use.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import REGISTRY, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

# name -> help text; every counter is rendered even at zero so dashboards see it.
COUNTERS: dict[str, str] = {
    "requests": "HTTP requests received on inbound routes",
    "received": "Customer messages parsed from verified requests",
    "published": "Messages acknowledged by JetStream as new",
    "duplicates": "Messages acknowledged by JetStream as duplicates (provider retries)",
    "rejected": "Requests refused (authenticity, malformed, too large)",
    "unavailable": "Requests answered 503 because NATS did not acknowledge in time",
    "delivered": "Replies the provider accepted",
    "delivery_failed": "Replies that ended in DeliveryFailed",
    "delivery_retries": "Provider calls retried after a transient failure",
    "notices_shown": "Notices (a conversation resolved) shown to the customer",
    "notices_failed": "Notices the connector could not show",
}

# Connector counter name -> the outcome it is in relaydesk_inbound_messages_total.
INBOUND_OUTCOMES = {
    "received": "received",
    "published": "published",
    "duplicates": "duplicate",
    "rejected": "rejected",
    "unavailable": "unavailable",
}

INBOUND_MESSAGES = PromCounter(
    "relaydesk_inbound_messages_total",
    "Inbound customer messages at the connectors, by channel and outcome "
    "(received, published, duplicate, rejected, unavailable)",
    ["channel", "outcome"],
)

HTTP_REQUEST_SECONDS = Histogram(
    "relaydesk_http_request_seconds",
    "HTTP requests served, by server (api, connector name), method, route and status",
    ["server", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# (connector, channel) -> counter name -> total; and rejections by kind.
_TOTALS: dict[tuple[str, str], Counter[str]] = {}
_KINDS: dict[tuple[str, str], Counter[str]] = {}


class Metrics:
    def __init__(self, connector: str, channel: str) -> None:
        self.connector = connector
        self.channel = channel
        self.counts: Counter[str] = Counter()
        self.rejected_by_reason: Counter[str] = Counter()
        self._inbound = {
            name: INBOUND_MESSAGES.labels(channel=channel, outcome=o) for name, o in INBOUND_OUTCOMES.items()
        }
        key = (connector, channel)
        self._totals = _TOTALS.setdefault(key, Counter())
        self._kinds = _KINDS.setdefault(key, Counter())

    def inc(self, name: str, n: int = 1) -> None:
        if name not in COUNTERS:
            raise KeyError(name)
        self.counts[name] += n
        self._totals[name] += n
        inbound = self._inbound.get(name)
        if inbound is not None and n:
            inbound.inc(n)

    def reject(self, kind: str) -> None:
        self.inc("rejected")
        self.rejected_by_reason[kind] += 1
        self._kinds[kind] += 1

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    def snapshot(self) -> dict[str, int]:
        return {name: self.counts[name] for name in COUNTERS}

    def render(self) -> str:
        """This instance's counters as Prometheus text (the registry renders the sums)."""
        labels = f'connector="{self.connector}",channel="{self.channel}"'
        lines: list[str] = []
        for name, help_text in COUNTERS.items():
            metric = f"relaydesk_connector_{name}_total"
            lines.append(f"# HELP {metric} {help_text}")
            lines.append(f"# TYPE {metric} counter")
            if name == "rejected" and self.rejected_by_reason:
                for kind, value in sorted(self.rejected_by_reason.items()):
                    lines.append(f'{metric}{{{labels},kind="{kind}"}} {value}')
            else:
                lines.append(f"{metric}{{{labels}}} {self.counts[name]}")
        return "\n".join(lines) + "\n"


class _ConnectorCollector(Collector):
    """The connectors' totals per (connector, channel), at scrape time."""

    def collect(self) -> Iterator[Metric]:
        totals, kinds = dict(_TOTALS), dict(_KINDS)
        for name, help_text in COUNTERS.items():
            family = Metric(f"relaydesk_connector_{name}", help_text, "counter")
            for (connector, channel), counts in sorted(totals.items()):
                labels = {"connector": connector, "channel": channel}
                by_kind = kinds[(connector, channel)]
                if name == "rejected" and by_kind:
                    for kind, value in sorted(by_kind.items()):
                        family.add_sample(f"{family.name}_total", {**labels, "kind": kind}, float(value))
                else:
                    family.add_sample(f"{family.name}_total", labels, float(counts[name]))
            yield family


REGISTRY.register(_ConnectorCollector())

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


SERIES_KEPT = 256
# The methods a route is served for; any other is labelled "other". The method comes from the
# client: aiohttp's C parser takes only HTTP's registered methods (about 35), its Python parser
# (AIOHTTP_NO_EXTENSIONS, a platform without the wheel) any token, and each made-up method made
# series of its own in the registry for as long as the process ran (the long-run audit).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_metrics(server: str) -> Middleware:
    """An aiohttp middleware observing each request's latency in ``relaydesk_http_request_seconds``.

    The route label is the matched resource's pattern (``/v1/conversations/{id}``), never the
    raw path: ids in paths would make a series per conversation."""

    # The labelled series per (method, route, status), looked up once: ``labels()`` costs a
    # lock and a tuple per call, on every webhook. Bounded, as the series are (``METHODS``).
    series: dict[tuple[str, str, int], Histogram] = {}

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as err:
            status = err.status
            raise
        finally:
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            key = (request.method if request.method in METHODS else "other", route, status)
            child = series.get(key)
            if child is None:
                child = HTTP_REQUEST_SECONDS.labels(server=server, method=key[0], route=route, status=str(status))
                if len(series) < SERIES_KEPT:
                    series[key] = child
            child.observe(time.perf_counter() - started)

    return observe


def exposition(metrics: Metrics) -> bytes:
    """A connector port's ``/metrics``: its own counters as they always read (labels
    ``connector``, ``channel`` in that order), then the rest of the process's registry (the
    registry's sums of ``relaydesk_connector_*`` left out, so no series appears twice)."""
    own = metrics.render()
    rest = [
        line
        for line in generate_latest(REGISTRY).decode().splitlines()
        if not line.startswith(("relaydesk_connector_", "# HELP relaydesk_connector_", "# TYPE relaydesk_connector_"))
    ]
    return (own + "\n".join(rest) + "\n").encode()
