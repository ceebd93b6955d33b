"""Zendesk two-way sync end to end over a real nats-server and every Relaydesk service:
an SMS (or a WhatsApp message) in → offered → accepted → a Zendesk ticket (tags, requester, assignee) → an agent's
public reply in Zendesk → the customer's SMS channel → ticket solved → conversation resolved;
Relaydesk's own comments are not echoed, and a restarted sink creates no second ticket."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from connectors.sdk.publish import InboundPublisher
from events.model import ConversationResolved, DeliverReply, InboundMessage, MessageSent, ReplyRequested
from services.bootstrap import event_store
from services.bus.embedded import EmbeddedNats
from services.sinks.conformance import Rig
from services.sinks.sdk import SinkRuntime
from services.sinks.zendesk import ZendeskSink
from tests.agents.helpers import AgentSystem, agent_system, agents_config, eventually

from .zendesk_fake import FakeZendesk, zendesk_config

pytestmark = pytest.mark.integration


def make_sink(api_url: str) -> ZendeskSink:
    raw = {**zendesk_config(api_url), "start": "beginning", "api_backoff": 0.01, "retry_pause": 0.05}
    return ZendeskSink.from_config({**raw, "lease_seconds": 2.0})


@pytest.fixture
async def system(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    config = agents_config(tmp_path, clean_nats.url)
    # The SMS connector takes no replies here: they stay on rd.out.sms for the test to read.
    config.connectors["sms"]["outbound"] = False
    async with agent_system(config, clean_nats) as s:
        yield s


@pytest.fixture
async def rig(system: AgentSystem, clean_nats: EmbeddedNats) -> AsyncIterator[Rig]:
    fake = FakeZendesk()
    url = await fake.start()
    nc = await nats.connect(clean_nats.url)
    store = event_store(nc)
    runtime = SinkRuntime(make_sink(url), nc, store)
    await runtime.start()
    rig = Rig(nc, store, fake, runtime, lambda: make_sink(url))
    try:
        yield rig
    finally:
        await rig.runtime.stop()
        await nc.drain()
        await fake.stop()


async def test_sms_to_zendesk_and_back(system: AgentSystem, rig: Rig) -> None:
    phone = "+15557770001"
    status = await system.system.send_sms("SM" + uuid.uuid4().hex, phone, "My invoice is wrong, I was charged twice")
    assert status == 200
    customer = await eventually(lambda: system.system.customer(phone))
    conv = await eventually(lambda: system.system.conversation_of(customer))
    cid = conv["id"]
    await eventually(lambda: system.conversation(cid, "offered"))
    code, body = await system.call("POST", f"/v1/conversations/{cid}/accept")
    assert code == 200, body

    # assigned → a ticket, requester = the customer, assignee = Ava's Zendesk user, tags
    ticket = await eventually(lambda: _value(rig.fake.ticket_of(cid)))
    assert ticket.assignee == "9001"
    assert {"relaydesk", "channel_sms", "tier_standard", "language_en"} <= set(ticket.tags)
    assert any(tag.startswith("skill_") for tag in ticket.tags)
    requester = rig.fake.users[customer]
    assert requester["phone"] == phone and str(requester["id"]) == ticket.requester
    assert [c.body for c in ticket.comments] == ["My invoice is wrong, I was charged twice"]
    assert rig.fake.created_with_key == [f"relaydesk-{cid}"]

    # Ava answers in the console: one comment by Ava, and its webhook is not echoed back
    code, body = await system.call("POST", f"/v1/conversations/{cid}/reply", body={"text": "Looking into it"})
    assert code == 202, body
    await rig.fake.wait_for(lambda: any(c.body == "Looking into it" for c in ticket.comments))
    ours = next(c for c in ticket.comments if c.body == "Looking into it")
    assert ours.author == "9001"
    code, body = await rig.post(rig.fake.echo(ticket, ours))
    assert code == 200 and body["acted"] is False, body
    # ... and it went out (as the SMS connector would report): replies go out in turn, so the
    # one written in Zendesk next is queued once this one has its outcome.
    [console_reply] = [r for r in await rig.replies(customer) if r.text == "Looking into it"]
    went = MessageSent(
        at=datetime.now(UTC), customer_id=customer, conversation_id=cid, channel="sms", reply_id=console_reply.reply_id
    )
    await rig.append(went)

    # a public reply written in Zendesk goes out on the customer's SMS channel
    code, body = await rig.post(rig.fake.agent_reply(ticket, "We refunded the second charge."))
    assert code == 200 and body["acted"] is True, body

    async def from_zendesk() -> list[ReplyRequested]:
        return [r for r in await rig.replies(customer) if r.actor == "sink:zendesk"]

    [reply] = await eventually(from_zendesk)
    assert reply.text == "We refunded the second charge." and reply.channel == "sms" and reply.agent_id == "ava"

    async def zendesk_reply_queued() -> dict[str, DeliverReply] | None:
        sent = {o.reply_id: o for o in await rig.outbound()}
        return sent if reply.reply_id in sent else None

    sent = await eventually(zendesk_reply_queued)
    assert sent[reply.reply_id].contact == phone and sent[reply.reply_id].text == reply.text
    await rig.caught_up(customer)
    texts = [c.body for c in ticket.comments]
    assert texts.count("We refunded the second charge.") == 1 and texts.count("Looking into it") == 1

    # a restart of the sink (even replaying the log from the start) makes no second ticket or comment
    await rig.restart(replay=True)
    await rig.caught_up(customer)
    assert len(rig.fake.tickets_of(cid)) == 1 and [c.body for c in ticket.comments] == texts

    # the ticket is solved in Zendesk → the conversation is resolved in Relaydesk
    code, body = await rig.post(rig.fake.solve(ticket))
    assert code == 200 and body["acted"] is True, body
    resolved = await eventually(lambda: rig.events(customer, ConversationResolved))
    assert [r.actor for r in resolved] == ["sink:zendesk"]
    await eventually(lambda: system.conversation(cid, "resolved"))
    await rig.caught_up(customer)
    assert ticket.status == "solved"


async def _value(value: object) -> object:
    return value


async def test_relaydesk_up_runs_a_configured_sink(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    fake = FakeZendesk()
    url = await fake.start()
    try:
        config = agents_config(tmp_path, clean_nats.url)
        config.sinks = {"zendesk": {**zendesk_config(url), "start": "beginning", "api_backoff": 0.01}}
        async with agent_system(config, clean_nats) as s:
            _, cid = await s.open(text="Where is my parcel?")
            await eventually(lambda: s.conversation(cid, "offered"))
            code, body = await s.call("POST", f"/v1/conversations/{cid}/accept")
            assert code == 200, body
            ticket = await eventually(lambda: _value(fake.ticket_of(cid)))
            assert [c.body for c in ticket.comments] == ["Where is my parcel?"]
    finally:
        await fake.stop()


async def test_whatsapp_to_zendesk_and_back(system: AgentSystem, rig: Rig) -> None:
    """The customer writes on WhatsApp (as the social connector publishes it); the agent's public
    reply in Zendesk goes out on rd.out.social with what the connector needs to send it on
    WhatsApp (platform, phone_number_id, the customer's number); solving the ticket resolves."""
    phone, number_id = "+15557770002", "106540352242922"
    wamid = "wamid.HBgL" + uuid.uuid4().hex
    message = InboundMessage(
        at=datetime.now(UTC),
        channel="social",
        provider="meta",
        provider_message_id=wamid,
        sender=phone,
        recipient=number_id,
        text="My invoice is wrong, I was charged twice",
        sender_name="Wanda",
        metadata={"platform": "whatsapp", "kind": "message", "phone_number_id": number_id, "type": "text"},
    )
    await InboundPublisher(rig.nc).publish_one(message)
    customer = await eventually(lambda: system.system.customer(phone))  # one phone identity space
    conv = await eventually(lambda: system.system.conversation_of(customer))
    cid = conv["id"]
    assert conv["channel"] == "social"
    await eventually(lambda: system.conversation(cid, "offered"))
    code, body = await system.call("POST", f"/v1/conversations/{cid}/accept")
    assert code == 200, body

    ticket = await eventually(lambda: _value(rig.fake.ticket_of(cid)))
    assert "channel_social" in ticket.tags
    assert [c.body for c in ticket.comments] == ["My invoice is wrong, I was charged twice"]

    code, body = await rig.post(rig.fake.agent_reply(ticket, "We refunded the second charge."))
    assert code == 200 and body["acted"] is True, body

    async def from_zendesk() -> list[ReplyRequested]:
        return [r for r in await rig.replies(customer) if r.actor == "sink:zendesk"]

    [reply] = await eventually(from_zendesk)
    assert reply.channel == "social" and reply.agent_id == "ava"
    rig.channel = "social"

    async def sent() -> DeliverReply | None:
        return next((o for o in await rig.outbound() if o.reply_id == reply.reply_id), None)

    out = await eventually(sent)
    assert out.channel == "social" and out.contact == phone and out.text == "We refunded the second charge."
    assert out.metadata["platform"] == "whatsapp" and out.metadata["phone_number_id"] == number_id
    assert out.thread_ref == wamid  # the customer's message, so WhatsApp shows the reply in context

    code, body = await rig.post(rig.fake.solve(ticket))
    assert code == 200 and body["acted"] is True, body
    await eventually(lambda: system.conversation(cid, "resolved"))
    assert [r.actor for r in await rig.events(customer, ConversationResolved)] == ["sink:zendesk"]
