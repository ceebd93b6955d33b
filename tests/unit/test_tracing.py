"""Tracing (services/tracing.py): W3C trace context in and out of NATS headers, the trace ids
on log lines, and nothing at all when it is off."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from events.model import AgentStatusChanged
from events.store import Append, StoredEvent
from events.stored import trace_context
from services import logs, tracing
from services.config import TracingSettings

ON = TracingSettings(enabled=True)
EVENT = AgentStatusChanged(at=datetime(2026, 1, 1, tzinfo=UTC), agent_id="ava", status="away")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(ON, service="test", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.configure(TracingSettings())


def ids_of(headers: dict[str, str] | None) -> tuple[str, str]:
    assert headers is not None
    _version, trace_id, span_id, _flags = headers["traceparent"].split("-")
    return trace_id, span_id


def test_a_span_continues_the_trace_its_headers_carry(spans: InMemorySpanExporter) -> None:
    with tracing.span("connector.inbound", kind="producer"):
        sent = tracing.headers()
    trace_id, parent_span = ids_of(sent)
    # What a NATS message's headers hold: Nats-Msg-Id and friends beside the trace context.
    received = trace_context({"Nats-Msg-Id": "sms:SM1", **(sent or {})})
    with tracing.span("intake.record", received, kind="consumer"):
        continued = tracing.headers()
    assert ids_of(continued)[0] == trace_id
    finished = {s.name: s for s in spans.get_finished_spans()}
    intake = finished["intake.record"]
    assert format(intake.context.trace_id, "032x") == trace_id
    assert intake.parent is not None and format(intake.parent.span_id, "016x") == parent_span
    assert finished["connector.inbound"].parent is None  # the message's trace begins there


def test_without_a_context_a_continuation_makes_no_span(spans: InMemorySpanExporter) -> None:
    for parent in (None, {}, {"traceparent": "not-a-traceparent"}):
        with tracing.span("delivery.notify", parent, new_trace=False):
            assert tracing.headers() is None
        assert tracing.start("router.decide", parent) is None
    # ... and a new trace where one may begin (intake, for a connector that does not trace).
    with tracing.span("intake.record", {"traceparent": "00-garbage"}):
        assert tracing.headers() is not None
    assert [s.name for s in spans.get_finished_spans()] == ["intake.record"]


def test_a_started_span_is_written_as_its_own_context(spans: InMemorySpanExporter) -> None:
    with tracing.span("intake.record"):
        parent = tracing.headers()
    decision = tracing.start("router.decide", parent)
    assert decision is not None
    written = tracing.headers(decision)
    assert ids_of(written)[0] == ids_of(parent)[0]
    assert ids_of(written)[1] == format(decision.get_span_context().span_id, "016x")
    with tracing.using(decision):
        assert tracing.current_ids() == ids_of(written)
    assert tracing.current_ids() is None
    tracing.finish(decision)
    assert [s.name for s in spans.get_finished_spans()] == ["intake.record", "router.decide"]


def test_log_lines_carry_the_current_trace(spans: InMemorySpanExporter) -> None:
    log = structlog.get_logger("test")
    with structlog.testing.capture_logs(processors=[logs.add_trace_ids]) as lines:
        log.warning("outside")
        with tracing.span("intake.record"):
            trace_id, span_id = ids_of(tracing.headers())
            log.warning("inside", customer_id="cu1")
            log.warning("named", trace_id="given", span_id="given")
    assert "trace_id" not in lines[0]
    assert lines[1]["trace_id"] == trace_id and lines[1]["span_id"] == span_id
    assert lines[2]["trace_id"] == "given"  # ids a caller logged itself are kept


def test_unsampled_messages_still_have_ids_on_their_log_lines() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(TracingSettings(enabled=True, sample_ratio=0.0), exporter=exporter)
    try:
        with tracing.span("intake.record"):
            assert tracing.current_ids() is not None
            flags = (tracing.headers() or {})["traceparent"].rsplit("-", 1)[1]
            assert not int(flags, 16) & 1  # "not sampled" travels on: downstream records none either
        assert exporter.get_finished_spans() == ()
    finally:
        tracing.configure(TracingSettings())


def test_off_nothing_is_traced_or_written() -> None:
    tracing.configure(TracingSettings())
    assert not tracing.enabled()
    with tracing.span("intake.record"):
        assert tracing.headers() is None
        assert tracing.current_ids() is None
    assert tracing.start("router.decide", {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
    with structlog.testing.capture_logs(processors=[logs.add_trace_ids]) as lines:
        structlog.get_logger("test").warning("line")
    assert "trace_id" not in lines[0]


def test_off_costs_no_opentelemetry_import() -> None:
    code = (
        "import sys\n"
        "from services import logs, tracing\n"
        "from services.config import TracingSettings\n"
        "import connectors.sdk.publish, events.store, services.intake.settling, services.router_runner\n"
        "import services.delivery.service\n"
        "tracing.configure(TracingSettings())\n"
        "with tracing.span('x'):\n"
        "    assert tracing.headers() is None\n"
        # (faststream probes for opentelemetry.semconv when installed: not ours, and no SDK.)
        "ours = ('opentelemetry.sdk', 'opentelemetry.trace', 'opentelemetry.exporter', 'opentelemetry.context')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(ours))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_appends_write_trace_headers_only_when_given() -> None:
    assert "traceparent" not in Append(EVENT).headers()
    context = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "vendor=1"}
    headers = Append(EVENT, trace=context).headers()
    assert headers["traceparent"] == context["traceparent"]
    assert headers["tracestate"] == "vendor=1"
    assert "Nats-Msg-Id" in headers


def test_a_stored_event_keeps_its_trace_as_metadata() -> None:
    context = trace_context({"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "Nats-Msg-Id": "x"})
    assert context == {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    assert trace_context(None) is None
    assert trace_context({"Nats-Msg-Id": "x"}) is None
    traced = StoredEvent(seq=1, subject="rd.evt.a.ava", event=EVENT, trace=context)
    assert traced == StoredEvent(seq=1, subject="rd.evt.a.ava", event=EVENT)  # the fact is the same


def test_the_otlp_endpoint_means_its_traces_path() -> None:
    assert tracing.traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("https://otel.example/custom/path") == "https://otel.example/custom/path"
