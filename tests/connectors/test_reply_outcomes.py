"""Connectors never write the log: a reply's outcome travels on ``rd.inbound.<channel>`` as
``ReplyOutcomeReported`` and intake records it as ``MessageSent`` / ``DeliveryFailed``, once
per reply. Real nats-servers of each test's own (intake's durable consumer takes everything
on ``rd.inbound.>``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from connectors.sdk import Connector, DeliveryResult, ProviderRequest
from connectors.sdk.conformance import read_outcomes
from connectors.sdk.publish import InboundPublisher, outcome_msg_id
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import decode_inbound, encode
from events.model import (
    Channel,
    DeliverReply,
    DeliveryFailed,
    InboundMessage,
    MessageSent,
    ReplyOutcomeReported,
    ReplyRequested,
)
from events.store import EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from tests.integration.system import eventually

from .intake_rig import intake_caught_up, make_intake, request_reply, running_intake

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def deliver_reply(channel: str = "sms", contact: str = "+15551230000") -> DeliverReply:
    return DeliverReply(
        conversation_id="cv_" + uuid.uuid4().hex[:12],
        customer_id="cu_" + uuid.uuid4().hex[:12],
        channel=channel,
        reply_id="rep_" + uuid.uuid4().hex[:12],
        contact=contact,
        text="Your refund is on its way.",
    )


def report_of(reply: DeliverReply, outcome: str = "sent", **fields: Any) -> ReplyOutcomeReported:
    return ReplyOutcomeReported(
        at=NOW,
        customer_id=reply.customer_id,
        conversation_id=reply.conversation_id,
        channel=reply.channel,
        reply_id=reply.reply_id,
        outcome=outcome,  # type: ignore[arg-type]
        **fields,
    )


# -- the record and its decoding (pure) ------------------------------------------------------


def test_inbound_records_decode_by_tag_and_old_messages_still_decode() -> None:
    message = InboundMessage(at=NOW, channel="sms", provider="twilio", provider_message_id="SM1", sender="+1555")
    report = report_of(deliver_reply(), provider_message_id="SM9")
    assert decode_inbound(encode(message)) == message
    assert decode_inbound(encode(report)) == report
    # An InboundMessage written without its tag (the single-struct decoder took it) still decodes.
    untagged = json.loads(encode(message))
    del untagged["type"]
    assert decode_inbound(json.dumps(untagged).encode()) == message
    for bad in (b'{"type": "reply_outcome_reported", "channel": "sms"}', b'{"type": "nope"}', b"[1]"):
        with pytest.raises(msgspec.ValidationError):
            decode_inbound(bad)
    with pytest.raises(msgspec.DecodeError):
        decode_inbound(b"not json")


def test_what_intake_records_for_each_outcome() -> None:
    reply = deliver_reply()
    sent = report_of(reply, provider_message_id="SM9").recorded()
    assert sent == MessageSent(
        at=NOW,
        customer_id=reply.customer_id,
        conversation_id=reply.conversation_id,
        channel="sms",
        reply_id=reply.reply_id,
        provider_message_id="SM9",
    )
    failed = report_of(reply, "failed", reason="opted out").recorded()
    assert isinstance(failed, DeliveryFailed) and failed.reason == "opted out" and not failed.bounced
    assert report_of(reply, "failed").recorded().reason == "delivery failed"  # type: ignore[union-attr]
    bounced = report_of(reply, "bounced", reason="5.1.1").recorded()
    assert isinstance(bounced, DeliveryFailed) and bounced.reason == "bounced: 5.1.1" and bounced.bounced
    assert report_of(reply, "bounced", reason="bounced: 5.1.1").recorded().reason == "bounced: 5.1.1"  # type: ignore[union-attr]
    # Dedupe ids: the dot keeps them apart from every "<channel>:<provider id>".
    assert outcome_msg_id(report_of(reply)) == f"sms.outcome:{reply.reply_id}"
    assert outcome_msg_id(report_of(reply, "bounced")) == f"sms.bounce:{reply.reply_id}"


# -- intake over NATS ------------------------------------------------------------------------


@pytest.fixture
async def own(clean_nats: EmbeddedNats) -> AsyncIterator[tuple[EmbeddedNats, NATS, EventStore]]:
    nc = await nats.connect(clean_nats.url)
    await ensure_streams(nc.jetstream())
    try:
        yield clean_nats, nc, EventStore(nc, nc.jetstream())
    finally:
        await nc.drain()


async def outcomes_on_log(store: EventStore, reply: DeliverReply) -> list[MessageSent | DeliveryFailed]:
    stored = await store.read(subjects.conversation(reply.customer_id, reply.conversation_id))
    return [s.event for s in stored if isinstance(s.event, MessageSent | DeliveryFailed)]


@pytest.mark.integration
async def test_a_refusal_quoting_the_address_is_stored_without_it(own: tuple[EmbeddedNats, NATS, EventStore]) -> None:
    """A provider's refusal names the number or mailbox it refused; RD_INBOUND keeps the
    report in clear for days, out of reach of an erasure that ran before it arrived."""
    _, nc, _ = own
    reply = deliver_reply()
    reason = "The 'To' number +447700900555 is not a valid phone number; ask zelda.q@example.org"
    await InboundPublisher(nc).report(report_of(reply, "failed", reason=reason))
    (stored,) = await read_outcomes(nc.jetstream(), "sms", reply.reply_id)
    assert stored.report.reason == "The 'To' number [number] is not a valid phone number; ask [email]"


@pytest.mark.integration
async def test_an_outcome_published_twice_is_one_message_sent(own: tuple[EmbeddedNats, NATS, EventStore]) -> None:
    server, nc, store = own
    js = nc.jetstream()
    reply = deliver_reply()
    await request_reply(store, reply)
    report = report_of(reply, provider_message_id="SM" + "9" * 32)
    publisher = InboundPublisher(nc)
    async with running_intake(server.url, nc):
        first = await publisher.report(report)
        again = await publisher.report(report)  # a connector's retry: JetStream dedupes it
        assert not first.duplicate and again.duplicate and again.seq == first.seq
        # Past the dedupe window (or a redelivery): on rd.inbound twice, recorded once.
        await js.publish(subjects.inbound("sms"), encode(report), headers={"Nats-Msg-Id": "sms.outcome:late-copy"})
        assert len(await read_outcomes(js, "sms", reply.reply_id)) == 2
        await intake_caught_up(nc)
        recorded = await outcomes_on_log(store, reply)
    assert recorded == [report.recorded()]


@pytest.mark.integration
async def test_racing_intake_workers_record_one_outcome(own: tuple[EmbeddedNats, NATS, EventStore]) -> None:
    _, nc, store = own
    intake = await make_intake(nc)
    reply = deliver_reply()
    await request_reply(store, reply)
    report = report_of(reply, provider_message_id="SM1")
    results = await asyncio.gather(*(intake.handle(report) for _ in range(4)))
    # A loser of the race either sees the winner's fact or finds its own append already
    # stored under the same Nats-Msg-Id: the log holds it once either way.
    assert reply.conversation_id in results
    assert await outcomes_on_log(store, reply) == [report.recorded()]
    # A failure reported for the same reply later changes nothing; a bounce is its own fact.
    assert await intake.handle(report_of(reply, "failed", reason="late")) is None
    assert await intake.handle(report_of(reply, "bounced", reason="5.1.1")) == reply.conversation_id
    assert await intake.handle(report_of(reply, "bounced", reason="5.1.1")) is None
    kinds = [type(e).__name__ for e in await outcomes_on_log(store, reply)]
    assert kinds == ["MessageSent", "DeliveryFailed"]


@pytest.mark.integration
async def test_reports_for_replies_the_log_never_asked_for_are_dropped(
    own: tuple[EmbeddedNats, NATS, EventStore],
) -> None:
    _, nc, store = own
    intake = await make_intake(nc)
    stray = deliver_reply()
    assert await intake.handle(report_of(stray)) is None  # no such conversation
    asked = deliver_reply()
    await request_reply(store, asked)
    other = msgspec.structs.replace(asked, reply_id="rep_forged")
    assert await intake.handle(report_of(other)) is None  # no such reply on it
    cross = msgspec.structs.replace(asked, channel="email")
    assert await intake.handle(report_of(cross)) is None  # another channel's connector
    assert await outcomes_on_log(store, stray) == []
    assert await outcomes_on_log(store, asked) == []
    # An email reply's outcome published by the sms connector (on rd.inbound.sms) is not its to give.
    mail = deliver_reply(channel="email", contact="ann@customer.test")
    await request_reply(store, mail)
    assert await intake.handle(report_of(mail), subject=subjects.inbound("sms")) is None
    assert await outcomes_on_log(store, mail) == []
    assert await intake.handle(report_of(mail), subject=subjects.inbound("email")) == mail.conversation_id
    assert len(await outcomes_on_log(store, mail)) == 1


# -- end to end: connector → rd.inbound → intake → log ---------------------------------------


class Provider:
    def __init__(self) -> None:
        self.sent: list[DeliverReply] = []


class LoopbackConnector(Connector):
    """A provider that accepts every contact except ``refuse``."""

    name: ClassVar[str] = "loopback"
    channel: ClassVar[Channel] = "sms"
    provider: ClassVar[str] = "loopback"
    provider_api: Provider

    def verify(self, request: ProviderRequest) -> None:
        return None

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return []

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        if reply.contact == "refuse":
            return DeliveryResult.failed("number blocked")
        self.provider_api.sent.append(reply)
        return DeliveryResult.sent(f"LB{len(self.provider_api.sent)}")


@pytest.mark.integration
async def test_a_replys_outcome_reaches_the_log_through_intake(own: tuple[EmbeddedNats, NATS, EventStore]) -> None:
    server, nc, store = own
    js = nc.jetstream()
    connector = LoopbackConnector.from_config({"port": 0, "outbound_fetch_timeout": 0.3, "deliver_attempts": 1})
    connector.provider_api = Provider()
    runtime = ConnectorRuntime(connector, nc)
    await runtime.start()
    try:
        async with running_intake(server.url, nc):
            ok, refused = deliver_reply(), deliver_reply(contact="refuse")
            for reply in (ok, refused):
                await request_reply(store, reply)  # what the API appends before queuing it
                await js.publish(subjects.outbound("sms"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})

            async def recorded(reply: DeliverReply) -> list[MessageSent | DeliveryFailed] | None:
                return await outcomes_on_log(store, reply) or None

            [sent] = await eventually(lambda: recorded(ok))
            [failed] = await eventually(lambda: recorded(refused))
    finally:
        await runtime.stop()
    assert isinstance(sent, MessageSent)
    assert (sent.customer_id, sent.conversation_id, sent.channel, sent.reply_id, sent.provider_message_id) == (
        ok.customer_id,
        ok.conversation_id,
        "sms",
        ok.reply_id,
        "LB1",
    )
    assert isinstance(failed, DeliveryFailed) and failed.reason == "number blocked"
    assert [r.contact for r in connector.provider_api.sent] == [ok.contact]
    # Every fact on the log came from intake (or the test, standing in for the API): the
    # conversation holds the request and its outcome, nothing else.
    history = await store.read(subjects.conversation(ok.customer_id, ok.conversation_id))
    assert [type(s.event) for s in history] == [ReplyRequested, MessageSent]
