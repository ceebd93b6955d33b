"""What is said once per reply, resolution or webhook is said at debug (README, Observability:
"Logs per message are at debug"): at info, months of traffic wrote a line per reply in intake
and in the chat connector, one per web chat resolution in every API process, and one per
Meta webhook (delivery and read receipts included: several per reply). The log and the
counters already hold each fact; warnings and failures stay at info and above."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from multidict import CIMultiDict, CIMultiDictProxy
from nats.aio.client import Client as NATS

from connectors.chat.connector import WebChatConnector
from connectors.chat.settings import ChatSettings
from connectors.sdk import ProviderRequest
from connectors.social.connector import MetaConnector
from connectors.voice.connector import TwilioVoiceConnector
from events.model import (
    ConversationOpened,
    ConversationResolved,
    DeliverReply,
    InboundMessage,
    ReplyOutcomeReported,
)
from events.store import EventStore, StoredEvent
from services.api.closings import ClosingNotices, PendingClosings
from services.delivery.attempts import Rounds
from services.delivery.records import DeliveryRecord
from services.delivery.senders import Outcome
from services.delivery.settings import DeliverySettings, Endpoint
from services.delivery.slack_api import SlackResult
from services.delivery.slack_app import SlackApp
from services.intake.outcomes import record_outcome
from tests.agents.test_closing_notices import Clock, FakeNats, FakeStore
from tests.connectors.intake_rig import request_reply
from tests.connectors.social.payloads import wa_status
from tests.connectors.social.test_inbound import settings as meta_settings

Logs = list[dict[str, Any]]
PER_EVENT = {
    "delivery.delivered",
    "intake.outcome_recorded",
    "chat.reply_stored",
    "chat.closed_stored",
    "closing.notice_queued",
    "social.batch",
}


def said_above_debug(logs: Logs) -> list[str]:
    return [e["event"] for e in logs if e["event"] in PER_EVENT and e["log_level"] != "debug"]


@pytest.mark.integration
async def test_a_replys_outcome_is_recorded_without_an_info_line(store: EventStore, log_lines: Logs) -> None:
    reply = DeliverReply(
        conversation_id="cv_" + uuid.uuid4().hex[:12],
        customer_id="cu_" + uuid.uuid4().hex[:12],
        channel="sms",
        reply_id="rep_" + uuid.uuid4().hex[:12],
        contact="+15551230000",
        text="On its way.",
    )
    await request_reply(store, reply)
    report = ReplyOutcomeReported(
        at=datetime.now(UTC),
        customer_id=reply.customer_id,
        conversation_id=reply.conversation_id,
        channel="sms",
        reply_id=reply.reply_id,
        outcome="sent",
    )
    assert await record_outcome(store, report) is not None
    assert any(e["event"] == "intake.outcome_recorded" for e in log_lines)
    assert said_above_debug(log_lines) == []


class History:
    epoch = "e1"

    async def append(self, *_: object) -> tuple[SimpleNamespace, bool]:
        return SimpleNamespace(seq=7), True


async def test_a_chat_reply_and_closing_are_stored_without_an_info_line(log_lines: Logs) -> None:
    connector = WebChatConnector(ChatSettings(widget_key="k", session_secret="s" * 32))
    connector.history = History()  # type: ignore[assignment]
    reply = DeliverReply(
        conversation_id="cv1",
        customer_id="cu1",
        channel="chat",
        reply_id="r1",
        contact="visitor:" + "a" * 32,
        text="hi",
    )
    assert (await connector.deliver(reply)).ok
    closing = DeliverReply(
        conversation_id="cv1",
        customer_id="cu1",
        channel="chat",
        reply_id="resolved:cv1",
        contact=reply.contact,
        text="",
        notice="resolved",
    )
    assert (await connector.deliver(closing)).ok
    assert {e["event"] for e in log_lines} >= {"chat.reply_stored", "chat.closed_stored"}
    assert said_above_debug(log_lines) == []


async def test_a_resolutions_notice_is_queued_without_an_info_line(log_lines: Logs) -> None:
    at = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    opened = ConversationOpened(at=at, customer_id="cu1", conversation_id="a", channel="chat", contact="visitor:x")
    subject = "rd.evt.c.cu1.a"
    deps: Any = SimpleNamespace(
        store=FakeStore([StoredEvent(1, subject, opened)]), nc=FakeNats(), notice_channels=frozenset({"chat"})
    )
    clock = Clock()
    clock.now = at
    pending = PendingClosings(clock)
    pending.apply(StoredEvent(2, subject, ConversationResolved(at=at, customer_id="cu1", conversation_id="a")))
    assert await ClosingNotices(deps, pending).sweep() == 1
    assert any(e["event"] == "closing.notice_queued" for e in log_lines)
    assert said_above_debug(log_lines) == []


def test_a_meta_webhook_of_receipts_is_taken_without_an_info_line(log_lines: Logs) -> None:
    connector = MetaConnector.from_config(meta_settings())
    assert isinstance(connector, MetaConnector)
    change = {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [wa_status("wamid.1")]}}
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}).encode()
    request = ProviderRequest(
        method="POST",
        scheme="https",
        host="x",
        raw_path="/meta/webhook",
        headers=CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"})),
        body=body,
    )
    assert list(connector.parse(request)) == []
    assert any(e["event"] == "social.batch" for e in log_lines)
    assert said_above_debug(log_lines) == []


async def test_a_delivered_notice_is_said_at_debug(log_lines: Logs) -> None:
    class Sent:
        async def send(self, *_: object) -> Outcome:
            return Outcome(ok=True, retryable=False, status_code=200)

    async def save(_record: DeliveryRecord) -> None:
        return None

    now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    endpoint = Endpoint(kind="webhook", id="ep", agent="ava", url="https://x.example/h", secret="s")
    attempts = Rounds(DeliverySettings(), {"ep": endpoint}, Sent(), clock=lambda: now, save=save)  # type: ignore[arg-type]
    record = DeliveryRecord(
        id="dl-1-ep-ava", endpoint_id="ep", kind="webhook", agent_id="ava", notice="offer", seq=1,
        created_at=now, updated_at=now,
    )  # fmt: skip
    await attempts.run(record, structlog.get_logger().bind(delivery_id=record.id))
    assert record.status == "delivered"
    assert any(e["event"] == "delivery.delivered" for e in log_lines)
    assert said_above_debug(log_lines) == []


@pytest.mark.integration
async def test_a_slack_message_posted_and_updated_is_said_at_debug(nc: NATS, uid: str, log_lines: Logs) -> None:
    class Api:
        async def post_message(self, channel: str, *_: object, **__: object) -> SlackResult:
            return SlackResult(True, data={"channel": "C1", "ts": f"17.{uid[:6]}"})

        async def update(self, *_: object) -> SlackResult:
            return SlackResult(True)

    app = SlackApp(Api(), nc.jetstream(), lambda _agent: None)  # type: ignore[arg-type]
    endpoint = Endpoint(kind="slack", id="ep", agent="ava", channel="C1")
    for notice in ("offer", "resolved"):
        body = {"notice": notice, "agent_id": "ava", "conversation": {"id": f"cv{uid}", "customer_id": "cu1"}}
        assert (await app.send("ep", endpoint, body)).ok
    assert {e["event"] for e in log_lines} >= {"slack.posted", "slack.updated"}
    assert [e["event"] for e in log_lines if e["event"].startswith("slack.") and e["log_level"] != "debug"] == []


async def test_a_call_status_callback_is_said_at_debug(log_lines: Logs) -> None:
    connector = TwilioVoiceConnector.from_config(
        {"port": 0, "auth_token": "t", "account_sid": "AC1", "outbound": False}
    )
    assert isinstance(connector, TwilioVoiceConnector)
    published: list[InboundMessage] = []

    async def publish(message: InboundMessage) -> None:
        published.append(message)

    connector._publish = publish  # type: ignore[method-assign]
    form = "CallSid=CA123&CallStatus=ringing&From=%2B15551230000&To=%2B15559870000"
    request = ProviderRequest(
        method="POST",
        scheme="https",
        host="x",
        raw_path="/twilio/voice/status",
        headers=CIMultiDictProxy(CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"})),
        body=form.encode(),
    )
    assert (await connector.on_status(request)).status == 200
    assert len(published) == 1
    assert any(e["event"] == "voice.status" for e in log_lines)
    assert [e["event"] for e in log_lines if e["event"] == "voice.status" and e["log_level"] != "debug"] == []
