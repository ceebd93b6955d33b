"""The metrics on the health port count what happened: SMS sent through a running system show
up as inbound messages, appended events, routing decisions and offers; an offer declined and
one left to expire are counted as such. The registry is process-global (other tests ran
services in this process), so every assertion compares before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.bus.embedded import EmbeddedNats, free_port
from tests.integration.system import eventually, running_system, system_config

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_metrics_count_what_a_test_produced(clean_nats: EmbeddedNats, tmp_path: Path) -> None:
    # Offers expire after 8 s: long enough to answer two of them first on a busy machine.
    config = system_config(tmp_path, clean_nats.url, offer_timeout_seconds=8.0)
    port = free_port()
    config.health = msgspec.structs.replace(config.health, port=port)
    health = f"http://127.0.0.1:{port}"
    async with running_system(config, clean_nats) as system:
        http = system.http
        before = await scrape(http, health)
        phones = [f"+1555123{n:04d}" for n in range(3)]
        for n, phone in enumerate(phones):
            status = await system.send_sms(f"SM{n:032d}", phone, "My invoice is wrong, I need a refund please")
            assert status == 200
        assert await system.send_sms(f"SM{0:032d}", phones[0], "My invoice is wrong, I need a refund please") == 200
        # Nobody in the demo roster speaks French: this one waits in a queue (for a minute,
        # until the fallback-language step), and the router's queue gauges show it.
        french = "Bonjour, ma facture est fausse et je voudrais un remboursement, merci beaucoup"
        assert await system.send_sms(f"SM{9:032d}", "+15551239999", french) == 200

        async def queue_waiting() -> bool:
            now = await scrape(http, health)
            waiting = [
                v
                for (name, labels), v in now.items()
                if name == "relaydesk_queue_waiting" and ("channel", "sms") in labels
            ]
            return bool(waiting) and max(waiting) >= 1

        assert await eventually(queue_waiting, timeout=30, every=0.5)

        offered: list[dict[str, Any]] = []
        for phone in phones:
            customer = await eventually(lambda phone=phone: system.customer(phone), timeout=30)
            offered.append(await eventually(lambda c=customer: _offered(system, c), timeout=30))
        accept, decline, _expire = offered
        status, body = await system.post(f"/v1/conversations/{accept['id']}/accept", {})
        assert status == 200, body
        status, body = await system.post(f"/v1/conversations/{decline['id']}/decline", {})
        assert status == 200, body

        async def expired_counted() -> Samples | None:
            after = await scrape(http, health)
            return after if delta(before, after, "relaydesk_offers_total", outcome="expired") >= 1 else None

        after = await eventually(expired_counted, timeout=60, every=0.5)

    sms = {"channel": "sms"}
    assert delta(before, after, "relaydesk_inbound_messages_total", **sms, outcome="received") == 5
    assert delta(before, after, "relaydesk_inbound_messages_total", **sms, outcome="published") == 4
    assert delta(before, after, "relaydesk_inbound_messages_total", **sms, outcome="duplicate") == 1
    assert delta(before, after, "relaydesk_connector_published_total", connector="sms", channel="sms") == 4
    assert delta(before, after, "relaydesk_events_appended_total", type="MessageReceived") == 4
    assert delta(before, after, "relaydesk_events_appended_total", type="ConversationOpened") == 4
    assert delta(before, after, "relaydesk_routing_decisions_total", decision="AgentOffered") >= 3
    assert delta(before, after, "relaydesk_offers_total", outcome="offered") >= 3
    assert delta(before, after, "relaydesk_offers_total", outcome="accepted") == 1
    assert delta(before, after, "relaydesk_offers_total", outcome="declined") == 1
    assert delta(before, after, "relaydesk_offers_total", outcome="expired") >= 1
    assert delta(before, after, "relaydesk_routing_decide_seconds_count") >= 1
    # Latency histograms of the servers that took the requests.
    webhook = {"server": "connector sms", "method": "POST", "route": "/twilio/sms", "status": "200"}
    assert delta(before, after, "relaydesk_http_request_seconds_count", **webhook) == 5
    answer = {"server": "api", "method": "POST", "route": "/v1/conversations/{id}/decline", "status": "200"}
    assert delta(before, after, "relaydesk_http_request_seconds_count", **answer) == 1
    # The projector's lag is a gauge the health port refreshes on every scrape.
    assert any(name == "relaydesk_projector_lag_events" for name, _ in after)


async def _offered(system: Any, customer: str) -> dict[str, Any] | None:
    conv = await system.conversation_of(customer)
    return conv if conv is not None and conv["status"] == "offered" else None


async def test_delivery_attempts_and_its_lease_role_are_shown(clean_nats: EmbeddedNats, tmp_path: Path) -> None:
    from services.delivery.settings import Endpoint
    from tests.agents.helpers import agent_system, agents_config, holds, receiver

    async with receiver(script=[500], then=200) as hook:
        endpoints = (Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret="s3cret"),)
        config = agents_config(tmp_path, clean_nats.url, endpoints)
        port = free_port()
        config.health = msgspec.structs.replace(config.health, port=port)
        health = f"http://127.0.0.1:{port}"
        async with agent_system(config, clean_nats) as s:
            http = s.system.http

            async def leading() -> Any:
                async with http.get(health + "/readyz") as resp:
                    body = await resp.json()
                return body if resp.status == 200 and body["checks"]["delivery"]["role"] == "leader" else None

            ready = await eventually(leading, timeout=30)
            # Where it stands: a first start on an empty log folded it all, from no snapshot.
            assert ready["checks"]["delivery"]["started_from_snapshot"] == 0
            assert ready["checks"]["delivery"]["checkpoint"] >= 0
            before = await scrape(http, health)
            await s.open()
            await eventually(holds(lambda: len(hook.ok()) == 1), timeout=30)

            async def counted() -> Samples | None:  # counted once the sender has its answer
                now = await scrape(http, health)
                ok = delta(before, now, "relaydesk_delivery_attempts_total", kind="webhook", result="ok")
                return now if ok >= 1 else None

            after = await eventually(counted, timeout=30)
    webhook = {"kind": "webhook"}
    assert delta(before, after, "relaydesk_delivery_attempts_total", **webhook, result="failed") == 1
    assert delta(before, after, "relaydesk_delivery_attempts_total", **webhook, result="ok") == 1
    assert delta(before, after, "relaydesk_delivery_failures_total", **webhook) == 0
