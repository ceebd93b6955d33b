"""Tracing over a real nats-server: an SMS through connector → intake → router → delivery is
one trace (spans in memory, no collector), its log lines carry that trace id, and with
tracing off nothing about traces is written."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
import structlog
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from events import subjects
from events.model import MessageSent, ReplyRequested
from services import logs, tracing
from services.bus.embedded import EmbeddedNats
from services.config import TracingSettings
from services.delivery import records
from services.delivery.settings import Endpoint
from tests.agents.helpers import agent_system, agents_config, eventually, holds, receiver
from tests.integration.fake_twilio import FakeTwilio, with_fake_twilio
from tests.integration.system import API_TOKEN, running_system, system_config
from tests.integration.test_replies import sent_for, sms_conversation

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0123456789"
STAGES = ("connector.inbound", "intake.record", "router.decide", "delivery.notify")


@pytest.fixture
def all_log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every log line (debug included) as an event dict, trace ids added as in service."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs(processors=[logs.add_trace_ids]) as lines:
            yield lines
    finally:
        structlog.configure(**saved)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(TracingSettings(enabled=True), service="up", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.configure(TracingSettings())


def trace_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


async def headers_on(url: str, stream: str, filter_subject: str) -> list[dict[str, str]]:
    """The headers of every message on ``filter_subject`` (ordered consumer, from the start)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out: list[dict[str, str]] = []
        if not info.state.messages:
            return out
        sub = await js.subscribe(
            filter_subject,
            stream=stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        try:
            while True:
                try:
                    # A deadline, not a pause: it ends at the message with nothing pending after
                    # it. (1 s was short for the first message from a new consumer under load.)
                    msg = await sub.next_msg(timeout=10.0)
                except TimeoutError:
                    return out
                out.append(dict(msg.headers or {}))
                if msg.metadata.num_pending == 0:
                    return out
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def ava_hook(url: str) -> tuple[Endpoint, ...]:
    return (Endpoint(kind="webhook", id="ava-hook", agent="ava", url=url, secret=SECRET),)


async def test_one_sms_is_one_trace_from_connector_to_delivery(
    tmp_path: Path,
    clean_nats: EmbeddedNats,
    spans: InMemorySpanExporter,
    all_log_lines: list[dict[str, Any]],
) -> None:
    async with receiver() as hook:
        config = agents_config(tmp_path, clean_nats.url, ava_hook(hook.url))
        async with agent_system(config, clean_nats) as s:
            assert await s.system.send_sms("SM" + "7" * 32, "+15551230007", "Please refund my invoice") == 200
            customer = await eventually(lambda: s.system.customer("+15551230007"))
            await eventually(holds(hook.ok))  # ava was offered it and her webhook told

            def every_stage() -> dict[str, ReadableSpan] | None:
                found = {span.name: span for span in spans.get_finished_spans()}
                return found if all(stage in found for stage in STAGES) else None

            stages = await eventually(holds(every_stage))
            trace_id = trace_hex(stages["connector.inbound"])
            assert {name: trace_hex(span) for name, span in stages.items()} == dict.fromkeys(STAGES, trace_id)
            # Each stage a child of the one before it (the router's of the latest traced event).
            assert stages["connector.inbound"].parent is None
            for name in STAGES[1:]:
                assert stages[name].parent is not None, name

            # The agent's webhook heard it under the delivery's span: her tool may continue it.
            assert stages["delivery.notify"].context is not None
            notify_span = format(stages["delivery.notify"].context.span_id, "016x")
            told = [seen.headers.get("traceparent", "").split("-")[1:3] for seen in hook.ok()]
            assert told and all(ids == [trace_id, notify_span] for ids in told), told
            # The context traveled in NATS headers, kept by JetStream beside each event.
            inbound = await headers_on(clean_nats.url, subjects.INBOUND_STREAM, subjects.INBOUND_ALL)
            assert [h["traceparent"].split("-")[1] for h in inbound] == [trace_id]
            logged = await headers_on(clean_nats.url, subjects.EVENTS_STREAM, subjects.customer_filter(customer))
            traced = [h for h in logged if "traceparent" in h]
            assert traced and all(h["traceparent"].split("-")[1] == trace_id for h in traced)

    # The message's log lines, in every stage, carry its trace id; none carries another.
    mine = [line for line in all_log_lines if line.get("trace_id") == trace_id]
    events = {line["event"] for line in mine}
    for expected in ("inbound.published", "intake.recorded", "router.decided", "delivery.delivered"):
        assert expected in events, (expected, sorted(events))
    # (The projector logs per batch of events, which may belong to many messages: not traced.)
    about_it = [
        line
        for line in all_log_lines
        if line.get("customer_id") == customer and not line["event"].startswith("projector.")
    ]
    untraced = [(line["event"], line.get("trace_id")) for line in about_it if line.get("trace_id") != trace_id]
    assert about_it and not untraced, untraced
    assert {line["trace_id"] for line in all_log_lines if "trace_id" in line} == {trace_id}


async def test_with_tracing_off_no_trace_context_is_written(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    tracing.configure(TracingSettings())
    async with receiver() as hook:
        config = agents_config(tmp_path, clean_nats.url, ava_hook(hook.url))
        async with agent_system(config, clean_nats) as s:
            assert await s.system.send_sms("SM" + "8" * 32, "+15551230008", "Please refund my invoice") == 200
            customer = await eventually(lambda: s.system.customer("+15551230008"))
            await eventually(holds(hook.ok))
            inbound = await headers_on(clean_nats.url, subjects.INBOUND_STREAM, subjects.INBOUND_ALL)
            logged = await headers_on(clean_nats.url, subjects.EVENTS_STREAM, subjects.EVENTS_ALL)
    assert inbound and logged
    assert len([h for h in logged if h]) >= 4  # the customer's events and the router's offer
    assert not [h for h in inbound + logged if "traceparent" in h or "tracestate" in h]
    assert customer
    assert "traceparent" not in {k.lower() for k in hook.ok()[0].headers}


async def test_a_delivery_resumed_after_a_restart_continues_the_trace_its_record_keeps(
    tmp_path: Path, clean_nats: EmbeddedNats, spans: InMemorySpanExporter
) -> None:
    """The trace context of recent facts is in the delivery service's memory only: a delivery
    resumed by another instance (a restart, a failover, an operator's retry) started none."""
    async with receiver(then=503) as hook:
        config = agents_config(tmp_path, clean_nats.url, ava_hook(hook.url))
        async with agent_system(config, clean_nats) as s:
            assert await s.system.send_sms("SM" + "8" * 32, "+15551230008", "Please refund my invoice") == 200
            [failed] = await eventually(lambda: s.deliveries("failed"))
            inbound = next(span for span in spans.get_finished_spans() if span.name == "connector.inbound")
            assert failed["trace"]["traceparent"].split("-")[1] == trace_hex(inbound)

            fresh = s.delivery_service(config)  # another instance: it folded nothing
            seen: list[tuple[str, str] | None] = []

            async def run(record: object, bound: object) -> None:
                seen.append(tracing.current_ids())

            fresh.rounds.run = run  # type: ignore[method-assign]
            await fresh._deliver(records.decode(msgspec.json.encode(failed)))
            assert seen and seen[0] is not None and seen[0][0] == trace_hex(inbound)


async def test_an_agents_reply_is_one_trace_from_the_api_to_the_recorded_outcome(
    tmp_path: Path, clean_nats: EmbeddedNats, spans: InMemorySpanExporter, fake_twilio: tuple[FakeTwilio, str]
) -> None:
    """The reply path was untraced: the API's command, the connector's delivery and the outcome
    intake records were three stories. A caller's own traceparent is continued."""
    fake, base_url = fake_twilio
    config = system_config(tmp_path, clean_nats.url)
    with_fake_twilio(config, base_url)
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with running_system(config, clean_nats) as system:
        customer_id, conv = await sms_conversation(system, "SM" + "9" * 32, "+15551230009")
        headers = {"Authorization": f"Bearer {API_TOKEN}", "traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"}
        url = f"{system.api}/v1/conversations/{conv['id']}/reply"
        async with system.http.post(url, json={"text": "A refund is on its way."}, headers=headers) as r:
            assert r.status == 202, await r.text()
        await eventually(lambda: sent_for(system, customer_id))
        assert len(fake.messages) == 1
        logged = await system.customer_log(customer_id)

    def named(name: str) -> list[ReadableSpan]:
        return [span for span in spans.get_finished_spans() if span.name == name and trace_hex(span) == caller_trace]

    assert [span.attributes["http.route"] for span in named("api.command")] == ["/v1/conversations/{id}/reply"]
    assert len(named("connector.deliver")) == 1
    assert named("intake.record"), "intake continued the outcome's trace"
    requested = [e for e in logged if isinstance(e.event, ReplyRequested)]
    sent = [e for e in logged if isinstance(e.event, MessageSent)]
    assert [e.trace and e.trace["traceparent"].split("-")[1] for e in requested + sent] == [caller_trace] * 2
