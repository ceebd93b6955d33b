"""Bounded redelivery and dead letters over a real nats-server, the connector's outbound side
(``rd.out.<channel>``), and the operator's ``/v1/dlq`` endpoints."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import nats
import pytest
from nats.aio.client import Client as NATS

from connectors.sdk import Connector, DeliveryResult, ProviderRequest
from connectors.sdk import outbound as outbound_module
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import Channel, DeliverReply, InboundMessage
from events.parking import ParkedMessage, ParkingLot, now
from events.store import EventStore
from services.bus.embedded import EmbeddedNats
from services.dlq import RETRY_HEADER
from tests.agents.helpers import agent_system, agents_config
from tests.integration.dead_letters import (
    FAST,
    MALFORMED,
    cli,
    dead_letter_count,
    parked_where,
)
from tests.integration.system import API_TOKEN, eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("quiet_logging")]


# -- connector outbound -------------------------------------------------------------------------


class MemorySms(Connector):
    name: ClassVar[str] = "memsms"
    channel: ClassVar[Channel] = "sms"
    provider: ClassVar[str] = "memory"
    sent: list[DeliverReply]

    def verify(self, request: ProviderRequest) -> None:
        return None

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return []

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        self.sent.append(reply)
        return DeliveryResult.sent(f"prov-{len(self.sent)}")


def reply_to(contact: str) -> DeliverReply:
    return DeliverReply(
        conversation_id="conv_" + uuid.uuid4().hex[:10],
        customer_id="cus_" + uuid.uuid4().hex[:10],
        channel="sms",
        reply_id="rep_" + uuid.uuid4().hex[:10],
        contact=contact,
        text="hi",
    )


@pytest.fixture
async def sms_runtime(
    private: tuple[str, NATS, EventStore], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, NATS, ConnectorRuntime, MemorySms]]:
    url, nc, _ = private
    monkeypatch.setattr(outbound_module, "REDELIVERY", FAST)
    connector = MemorySms.from_config({"port": 0, "deliver_attempts": 1, "outbound_fetch_timeout": 0.3})
    connector.sent = []
    runtime = ConnectorRuntime(connector, nc)
    await runtime.start()
    try:
        yield url, nc, runtime, connector
    finally:
        await runtime.stop()


async def test_malformed_outbound_sms_is_dead_lettered_and_the_next_reply_sent(
    sms_runtime: tuple[str, NATS, ConnectorRuntime, MemorySms], capsys: pytest.CaptureFixture[str]
) -> None:
    url, nc, _, connector = sms_runtime
    js = nc.jetstream()
    lot = ParkingLot(js)
    reader = "connector:memsms"
    before = dead_letter_count(reader, subjects.OUTBOUND_STREAM)
    bad = await js.publish(subjects.outbound("sms"), b'{"type": "deliver_reply", "nonsense": 1}')
    good = reply_to("+15551110003")
    await js.publish(subjects.outbound("sms"), encode(good))
    key = f"{subjects.OUTBOUND_STREAM}.{bad.seq}"
    parked = await eventually(lambda: lot.get(key))
    await eventually(lambda: asyncio.sleep(0, result=[r for r in connector.sent if r.reply_id == good.reply_id]))
    assert parked.reader == reader and parked.deliveries == 1 and parked.kind == "dead_letter"
    assert parked.subject == subjects.outbound("sms")
    assert dead_letter_count(reader, subjects.OUTBOUND_STREAM) == before + 1
    info = await js.consumer_info(subjects.OUTBOUND_STREAM, "connector_memsms")
    assert info.config.max_deliver == FAST.max_deliver and info.num_redelivered == 0

    code, out = await cli(capsys, "dlq", "list", "--kind", "dead_letter", "--json", "--nats-url", url)
    assert code == 0 and [p["key"] for p in json.loads(out)["parked"]] == [key]
    code, out = await cli(capsys, "dlq", "retry", key, "--nats-url", url)
    assert code == 0, out
    again = await eventually(lambda: parked_where(lot, lambda r: r.headers.get(RETRY_HEADER) == key))
    assert again.subject == subjects.outbound("sms") and again.seq > bad.seq
    code, _ = await cli(capsys, "dlq", "drop", again.key, "--nats-url", url)
    assert code == 0 and await lot.list() == []
    assert len(connector.sent) == 1


async def test_an_outcome_that_cannot_be_reported_is_parked_after_bounded_tries_and_sent_once(
    sms_runtime: tuple[str, NATS, ConnectorRuntime, MemorySms], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, nc, runtime, connector = sms_runtime
    lot = ParkingLot(nc.jetstream())

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("inbound stream unreachable")

    monkeypatch.setattr(runtime.publisher, "report", unreachable)
    reply = reply_to("+15551110004")
    ack = await nc.jetstream().publish(subjects.outbound("sms"), encode(reply))
    parked = await eventually(lambda: lot.get(f"{subjects.OUTBOUND_STREAM}.{ack.seq}"))
    assert parked.deliveries == FAST.max_deliver
    assert "could not be reported" in parked.error and "ConnectionError" in parked.error
    assert [r.reply_id for r in connector.sent] == [reply.reply_id]  # sent once, not per redelivery

    async def work_queue_empty() -> bool:
        info = await nc.jetstream().stream_info(subjects.OUTBOUND_STREAM)
        return info.state.messages == 0

    await eventually(work_queue_empty)  # terminated: gone from the work queue, kept in rd_parked


# -- the API ---------------------------------------------------------------------------------------


async def test_dlq_endpoints_for_operators_only(clean_nats: EmbeddedNats, tmp_path: Path) -> None:
    config = agents_config(tmp_path, clean_nats.url)
    async with agent_system(config, clean_nats, services=("intake", "api")) as sys:
        nc = await nats.connect(clean_nats.url)
        try:
            js = nc.jetstream()
            lot = ParkingLot(js)
            bad = await js.publish(subjects.inbound("sms"), MALFORMED, headers={"Nats-Msg-Id": "sms:SMapi"})
            key = f"{subjects.INBOUND_STREAM}.{bad.seq}"
            await eventually(lambda: lot.get(key))
            # A quarantined log event (parked by a reader of RD_EVENTS), for the refusal.
            quarantined = ParkedMessage(
                stream=subjects.EVENTS_STREAM,
                seq=999_999,
                subject="rd.evt.c.cu1.cv1",
                kind="quarantined",
                reader="projector",
                error="DecodeError: bad",
                parked_at=now(),
                data=b"{",
            )
            await lot.park(quarantined)

            agent_token, _ = await sys.issue_token("ava")
            for method, path in (
                ("GET", "/v1/dlq"),
                ("GET", f"/v1/dlq/{key}"),
                ("POST", f"/v1/dlq/{key}/retry"),
                ("DELETE", f"/v1/dlq/{key}"),
            ):
                status, body = await sys.call(method, path, token=agent_token)
                assert status == 403, (method, path, body)
            assert await lot.get(key) is not None  # the agent changed nothing

            status, body = await sys.call("GET", "/v1/dlq")
            assert status == 200
            assert {p["key"]: p["kind"] for p in body["parked"]} == {
                key: "dead_letter",
                quarantined.key: "quarantined",
            }
            status, body = await sys.call("GET", "/v1/dlq?kind=quarantined")
            assert status == 200 and [p["key"] for p in body["parked"]] == [quarantined.key]
            status, body = await sys.call("GET", "/v1/dlq?kind=nonsense")
            assert status == 400

            status, body = await sys.call("GET", f"/v1/dlq/{key}")
            assert status == 200 and body["data"] == MALFORMED.decode() and body["reader"] == "intake"
            status, body = await sys.call("GET", "/v1/dlq/RD_INBOUND.424242")
            assert status == 404

            status, body = await sys.call("POST", f"/v1/dlq/{quarantined.key}/retry")
            assert status == 409 and "append-only" in body["error"]
            assert await lot.get(quarantined.key) is not None

            status, body = await sys.call("POST", f"/v1/dlq/{key}/retry")
            assert status == 202, body
            assert body["retried"]["msg_id"] == f"retry:{key}:1" and body["retried"]["seq"] > bad.seq
            again = await eventually(lambda: parked_where(lot, lambda r: r.headers.get(RETRY_HEADER) == key))

            for parked_key in (again.key, quarantined.key):
                status, body = await sys.call("DELETE", f"/v1/dlq/{parked_key}")
                assert status == 200 and body == {"dropped": parked_key}
            status, body = await sys.call("DELETE", f"/v1/dlq/{key}")
            assert status == 404
            status, body = await sys.call("GET", "/v1/dlq")
            assert status == 200 and body["count"] == 0

            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with sys.system.http.get(sys.api + "/metrics", headers=headers) as resp:
                assert resp.status == 200
                text = await resp.text()
            assert 'relaydesk_dead_letters_total{reader="intake",stream="RD_INBOUND"}' in text
            async with sys.system.http.get(
                sys.api + "/metrics", headers={"Authorization": f"Bearer {agent_token}"}
            ) as r:
                assert r.status == 403
        finally:
            await nc.drain()
