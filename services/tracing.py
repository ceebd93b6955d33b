"""OpenTelemetry traces across NATS: one trace per customer message, from the connector that
heard it through intake and the router to the delivery that tells an agent.

Off by default (``[tracing] enabled``), and then nothing of OpenTelemetry is imported: every
helper here checks one module global and returns a shared no-op. On, a ``TracerProvider``
sends spans to ``otlp_endpoint`` over OTLP/HTTP (batched); without an endpoint spans are still
made, so their ids are on the log lines (``services.logs.add_trace_ids``).

What travels where (W3C trace context, https://www.w3.org/TR/trace-context/):

* a connector opens span ``connector.inbound`` per message and sends ``traceparent`` (and
  ``tracestate``) in the NATS headers of what it publishes on ``rd.inbound.<channel>``
  (the connector SDK's ``publish.trace_inbound`` hook, set by ``configure``: connectors do
  not import ``services``);
* intake continues it (``intake.record``) and writes it into the headers of every event it
  appends; JetStream keeps headers, so a reader sees it as ``StoredEvent.trace``;
* the router keeps the latest trace context per conversation and continues it
  (``router.decide``) into the headers of the decisions it appends;
* delivery continues the trace of the offer (``delivery.notify``) around the webhook, Slack
  or email call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import structlog

from events.stored import TRACEPARENT, trace_context

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from events.model import DeliverReply, InboundMessage
    from services.config import TracingSettings

__all__ = [
    "configure",
    "current_ids",
    "enabled",
    "finish",
    "headers",
    "shutdown",
    "span",
    "start",
    "trace_context",
    "using",
]

log = structlog.get_logger(__name__)

INSTRUMENTATION = "relaydesk"
_NOOP: contextlib.nullcontext[None] = contextlib.nullcontext()

# Set by ``configure``; None: tracing is off (the only check on the hot path).
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    return _tracer is not None


def configure(settings: TracingSettings, *, service: str = "", exporter: SpanExporter | None = None) -> None:
    """Set tracing up for this process from ``[tracing]`` (again: replaces what was set).

    ``service`` names the process's role (``intake``, ``router``, …; ``up`` runs them all and
    keeps ``service_name`` as it is). ``exporter``: spans go there, each as it ends (tests
    pass an ``InMemorySpanExporter``); otherwise to ``otlp_endpoint`` in batches, or nowhere.
    Raises ``SystemExit`` with the fix when tracing is on and the SDK is not installed."""
    global _tracer, _provider
    shutdown()
    if not settings.enabled:
        _set_connector_hook(None)
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as err:
        raise SystemExit(
            "relaydesk: [tracing] enabled needs OpenTelemetry: pip install 'relaydesk[otel]'"
            f" (or set RELAYDESK_TRACING_ENABLED=false): {err}"
        ) from err
    name = settings.service_name if service in ("", "up") else f"{settings.service_name}-{service}"
    ratio = min(1.0, max(0.0, settings.sample_ratio))
    # A trace begun upstream keeps the upstream's sampling decision: a message is traced
    # through every process or through none.
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}), sampler=ParentBased(TraceIdRatioBased(ratio))
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))))
    # A provider of our own, not the global one: the global can be set only once per process,
    # and tests (and a reloaded config) configure again.
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION)
    _set_connector_hook(_inbound_span)
    log.info("tracing.on", service=name, sample_ratio=ratio, exporter=_exporter_name(exporter, settings))


def _exporter_name(exporter: SpanExporter | None, settings: TracingSettings) -> str:
    if exporter is not None:
        return type(exporter).__name__
    return traces_url(settings.otlp_endpoint) if settings.otlp_endpoint else "none (ids on log lines only)"


def shutdown() -> None:
    """Flush what is batched and turn tracing off."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: ``http://collector:4318`` means ``…/v1/traces``."""
    if urlparse(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


# -- spans ------------------------------------------------------------------------------


def span(
    name: str,
    parent: Mapping[str, str] | None = None,
    *,
    new_trace: bool = True,
    kind: str = "internal",
    attributes: Mapping[str, str | int] | None = None,
) -> contextlib.AbstractContextManager[None]:
    """A span made current for the ``with`` block: a child of ``parent`` (W3C headers) when
    it carries a context, else of the current span, else a new trace (``new_trace=False``:
    no span then). Off: a shared no-op."""
    if _tracer is None:
        return _NOOP
    return _current_span(_tracer, name, parent, new_trace, kind, attributes)


@contextlib.contextmanager
def _current_span(
    tracer: Tracer,
    name: str,
    parent: Mapping[str, str] | None,
    new_trace: bool,
    kind: str,
    attributes: Mapping[str, str | int] | None,
) -> Iterator[None]:
    context = _extract(parent)
    if context is None and not new_trace:
        yield
        return
    with tracer.start_as_current_span(name, context=context, kind=_kind(kind), attributes=attributes):
        yield


def start(
    name: str,
    parent: Mapping[str, str] | None,
    *,
    kind: str = "internal",
    attributes: Mapping[str, str | int] | None = None,
) -> Span | None:
    """A span continuing ``parent`` (W3C headers), not made current; None when tracing is off
    or ``parent`` carries no context. End it with ``finish``."""
    if _tracer is None:
        return None
    context = _extract(parent)
    if context is None:
        return None
    return _tracer.start_span(name, context=context, kind=_kind(kind), attributes=attributes)


def using(current: Span | None) -> contextlib.AbstractContextManager[Any]:
    """``current`` as the current span for the ``with`` block (not ended on leaving it)."""
    if current is None:
        return _NOOP
    from opentelemetry.trace import use_span

    return use_span(current, end_on_exit=False)


def finish(current: Span | None) -> None:
    if current is not None:
        current.end()


def headers(current: Span | None = None) -> dict[str, str] | None:
    """The W3C headers of ``current`` (default: the current span) to send along; None when
    tracing is off or there is no span."""
    if _tracer is None:
        return None
    from opentelemetry.trace import get_current_span, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    target = current if current is not None else get_current_span()
    if not target.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(target))
    return carrier or None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, as log lines carry them; None when
    tracing is off or no span is current."""
    if _tracer is None:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _extract(parent: Mapping[str, str] | None) -> Any:
    """The OpenTelemetry context carried by ``parent``, None when it carries none."""
    if not parent or TRACEPARENT not in parent:
        return None
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract(dict(parent))
    # A malformed traceparent extracts to an empty context: treated as none.
    return context if get_current_span(context).get_span_context().is_valid else None


def _kind(kind: str) -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind[kind.upper()]


# -- the connector SDK's hook -------------------------------------------------------------


@contextlib.contextmanager
def _inbound_span(message: InboundMessage, subject: str) -> Iterator[dict[str, str]]:
    """Around the publish of one inbound message: its span, and the headers that carry it."""
    attributes = {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "relaydesk.channel": message.channel,
        "relaydesk.provider_message_id": message.provider_message_id,
    }
    with span("connector.inbound", kind="producer", attributes=attributes):
        yield headers() or {}


@contextlib.contextmanager
def _outbound_span(reply: DeliverReply, queued_with: Mapping[str, str] | None) -> Iterator[dict[str, str]]:
    """Around the delivery of one reply and the report of its outcome: its span, continuing the
    trace the reply was queued with (the API's command), and the headers the report carries."""
    attributes = {
        "messaging.system": "nats",
        "relaydesk.channel": reply.channel,
        "relaydesk.reply_id": reply.reply_id,
        "relaydesk.conversation_id": reply.conversation_id,
    }
    with span("connector.deliver", trace_context(queued_with), kind="consumer", attributes=attributes):
        yield headers() or {}


def _set_connector_hook(hook: Any) -> None:
    from connectors.sdk import publish

    publish.trace_inbound = hook
    publish.trace_outbound = _outbound_span if hook is not None else None
