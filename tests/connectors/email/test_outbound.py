"""Replies by SMTP to a local aiosmtpd sink, threaded under the customer's message, over a
nats-server of the test's own (the outbound worker's durable consumer must not outlive it)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from connectors.email.connector import EmailConnector
from connectors.email.threads import make_token, read_token
from connectors.sdk.conformance import wait_for_outcome
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import DeliverReply, DeliveryFailed, MessageSent
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats

from .helpers import SmtpSink, inbound_for, mail, smtp_send

pytestmark = pytest.mark.integration


@dataclass
class World:
    nc: NATS
    sink: SmtpSink
    connector: EmailConnector


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **extra: Any) -> AsyncIterator[World]:
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.astart()
    nc = await nats.connect(server.url, connect_timeout=2)
    sink = SmtpSink()
    runtime: ConnectorRuntime | None = None
    try:
        await ensure_streams(nc.jetstream())
        port = await sink.start()
        settings = {
            "port": 0,
            "smtp_port": 0,
            "domains": ["support.test", "billing.test"],
            "send_host": "127.0.0.1",
            "send_port": port,
            "from_address": "support@support.test",
            "from_name": "Acme Support",
            "deliver_backoff": 0.05,
            "outbound_fetch_timeout": 0.5,
            "ack_timeout": 2.0,
            **extra,
        }
        connector = EmailConnector.from_config(settings)
        runtime = ConnectorRuntime(connector, nc)
        await runtime.start()
        yield World(nc, sink, connector)
    finally:
        if runtime is not None:
            await runtime.stop()
        with contextlib.suppress(Exception):
            await nc.close()
        await sink.stop()
        await server.astop()


def reply_to(customer_msg_id: str, **metadata: str) -> DeliverReply:
    return DeliverReply(
        conversation_id="cv_" + uuid.uuid4().hex[:20],
        customer_id="cu_" + uuid.uuid4().hex[:20],
        channel="email",
        reply_id="rep_" + uuid.uuid4().hex[:12],
        contact="ann@customer.test",
        text="Sorry about that — the corrected invoice is attached to your account.",
        thread_ref=customer_msg_id,
        metadata=metadata,
    )


async def publish(nc: NATS, reply: DeliverReply) -> None:
    await nc.jetstream().publish(subjects.outbound("email"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})


async def outcome(nc: NATS, reply: DeliverReply, timeout: float = 15.0) -> MessageSent | DeliveryFailed:
    """What intake will record, from the outcome the connector reported on ``rd.inbound.email``."""
    return (await wait_for_outcome(nc.jetstream(), "email", reply.reply_id, timeout=timeout)).recorded


def parsed(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_reply_is_threaded_under_the_customers_message(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        reply = reply_to(
            "<c2@customer.test>",
            subject="RE: Re: Invoice question",
            references="<c1@customer.test> <rd.rep_old@support.test>",
            **{"from": "billing@Billing.test"},
        )
        await publish(w.nc, reply)
        sent = await outcome(w.nc, reply)
        assert isinstance(sent, MessageSent), sent
        [got] = await w.sink.wait_for(1)
        msg = parsed(got.data)
        assert got.rcpt_tos == ["ann@customer.test"]
        assert got.mail_from == "billing@billing.test"
        assert msg["In-Reply-To"] == "<c2@customer.test>"
        assert msg["References"] == "<c1@customer.test> <rd.rep_old@support.test> <c2@customer.test>"
        assert msg["Subject"] == "Re: Invoice question"
        assert msg["Message-ID"] == f"<{sent.provider_message_id}>"
        assert sent.provider_message_id == f"rd.{reply.reply_id}@billing.test"
        assert msg["From"] == "Acme Support <billing@billing.test>"
        assert msg["To"] == "ann@customer.test"
        assert msg["Reply-To"].addresses[0].addr_spec == f"billing+{reply.conversation_id}@billing.test"
        body = msg.get_body(preferencelist=("plain",))
        assert body is not None and body.get_content().strip() == reply.text


async def test_from_outside_our_domains_falls_back_to_from_address(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        reply = reply_to("c3@customer.test", **{"from": "ceo@elsewhere.test"})
        await publish(w.nc, reply)
        assert isinstance(await outcome(w.nc, reply), MessageSent)
        [got] = await w.sink.wait_for(1)
        msg = parsed(got.data)
        assert msg["From"] == "Acme Support <support@support.test>"
        assert msg["In-Reply-To"] == "<c3@customer.test>"
        assert msg["References"] == "<c3@customer.test>"
        assert msg["Subject"] == "Re: Your request"


async def test_an_agents_first_mail_is_not_a_reply(tmp_path: Path) -> None:
    """Found by an audit: a conversation the agent started went out as "Re: Your order"."""
    async with world(tmp_path) as w:
        reply = msgspec.structs.replace(reply_to("unused", subject="Your order"), thread_ref=None)
        await publish(w.nc, reply)
        assert isinstance(await outcome(w.nc, reply), MessageSent)
        [got] = await w.sink.wait_for(1)
        msg = parsed(got.data)
        assert msg["Subject"] == "Your order"
        assert msg["In-Reply-To"] is None and msg["References"] is None


async def test_signed_token_and_subject_tag_round_trip(tmp_path: Path) -> None:
    """Our reply goes out; the customer answers it; the inbound event names the conversation."""
    async with world(tmp_path, thread_token_secret="k3y", subject_tag=True) as w:
        reply = reply_to("c4@customer.test", subject="Help")
        await publish(w.nc, reply)
        sent = await outcome(w.nc, reply)
        assert isinstance(sent, MessageSent)
        [got] = await w.sink.wait_for(1)
        ours = parsed(got.data)
        token = make_token(reply.conversation_id, "k3y")
        assert ours["Subject"] == f"Re: Help [#{token}]"
        reply_address = ours["Reply-To"].addresses[0].addr_spec
        assert reply_address == f"support+{token}@support.test"
        assert read_token(token, "k3y") == reply.conversation_id and read_token(token, "other") is None

        uid = uuid.uuid4().hex[:12]
        answer = mail(
            uid,
            to=reply_address,
            subject=f"Re: {ours['Subject']}",
            headers={"In-Reply-To": ours["Message-ID"], "References": f"{ours['References']} {ours['Message-ID']}"},
        )
        assert assert_ok(await smtp_send(w.connector.smtp_address or ("", 0), answer.as_bytes(), rcpts=[reply_address]))
        [item] = await inbound_for(w.nc, f"{uid}.0@customer.test")
        assert item.message.thread_ref == sent.provider_message_id
        assert item.message.metadata["thread_token"] == reply.conversation_id
        assert item.message.metadata["subject_tag"] == reply.conversation_id
        assert item.message.recipient == "support@support.test"


def assert_ok(result: Any) -> bool:
    return bool(result.data == 250)


async def test_permanent_refusal_is_delivery_failed_without_retry(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.sink.handler.answers = ["554 5.7.1 no thanks"]
        reply = reply_to("c5@customer.test")
        await publish(w.nc, reply)
        failed = await outcome(w.nc, reply)
        assert isinstance(failed, DeliveryFailed)
        assert "554" in failed.reason
        assert len(w.sink.handler.received) == 1


async def test_unreachable_smtp_is_retried_then_failed(tmp_path: Path) -> None:
    async with world(tmp_path, send_port=1, deliver_attempts=2) as w:
        reply = reply_to("c6@customer.test")
        await publish(w.nc, reply)
        failed = await outcome(w.nc, reply)
        assert isinstance(failed, DeliveryFailed)
        assert "unreachable" in failed.reason and "2 attempts" in failed.reason


async def test_not_an_address_is_delivery_failed(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        reply = DeliverReply(
            conversation_id="cv_x1",
            customer_id="cu_x1",
            channel="email",
            reply_id="rep_bad",
            contact="not an address\r\nBcc: victim@x.test",
            text="hi",
        )
        await publish(w.nc, reply)
        failed = await outcome(w.nc, reply)
        assert isinstance(failed, DeliveryFailed)
        assert w.sink.handler.received == []


async def test_reply_built_like_the_api_from_the_inbound_message(tmp_path: Path) -> None:
    """The contract with intake and the API: the customer's mail comes in; the reply is built
    from that InboundMessage the way the API builds it from MessageReceived (thread_ref =
    provider_message_id, metadata copied) and goes out threaded, from the address written to."""
    async with world(tmp_path) as w:
        uid = uuid.uuid4().hex[:12]
        customer = mail(
            uid, to="billing@billing.test", subject="Invoice 42", headers={"References": "<older@customer.test>"}
        )
        address = w.connector.smtp_address or ("", 0)
        assert assert_ok(await smtp_send(address, customer.as_bytes(), rcpts=["billing@billing.test"]))
        [item] = await inbound_for(w.nc, f"{uid}.0@customer.test")
        inbound = item.message
        reply = DeliverReply(
            conversation_id="cv_" + uid,
            customer_id="cu_" + uid,
            channel="email",
            reply_id="rp_" + uid,
            contact=inbound.sender,
            text="Fixed.",
            thread_ref=inbound.provider_message_id,
            metadata={**inbound.metadata, "last_customer_message_at": inbound.at.isoformat()},
        )
        await publish(w.nc, reply)
        assert isinstance(await outcome(w.nc, reply), MessageSent)
        [got] = await w.sink.wait_for(1)
        msg = parsed(got.data)
        assert msg["To"] == "ann@customer.test"
        assert msg["From"] == "Acme Support <billing@billing.test>"
        assert msg["In-Reply-To"] == f"<{uid}.0@customer.test>"
        assert msg["References"] == f"<older@customer.test> <{uid}.0@customer.test>"
        assert msg["Subject"] == "Re: Invoice 42"


async def test_reply_goes_to_all_the_customers_mail_was_addressed_to(tmp_path: Path) -> None:
    """metadata.cc (the customer's To and Cc beyond our domains) is copied, like Reply all."""
    async with world(tmp_path) as w:
        cc = "anna@customer.test,ann@customer.test,help@support.test,Boss@Customer.test"
        reply = reply_to("<c9@customer.test>", subject="Damaged parcel", cc=cc)
        await publish(w.nc, reply)
        sent = await outcome(w.nc, reply)
        assert isinstance(sent, MessageSent), sent
        [got] = await w.sink.wait_for(1)
        assert got.rcpt_tos == ["ann@customer.test", "anna@customer.test", "Boss@Customer.test"]
        msg = parsed(got.data)
        assert msg["To"] == "ann@customer.test"
        assert msg["Cc"] == "anna@customer.test, Boss@Customer.test"


async def test_reply_all_off_answers_the_customer_only(tmp_path: Path) -> None:
    async with world(tmp_path, reply_all=False) as w:
        reply = reply_to("<c10@customer.test>", cc="anna@customer.test")
        await publish(w.nc, reply)
        assert isinstance(await outcome(w.nc, reply), MessageSent)
        [got] = await w.sink.wait_for(1)
        assert got.rcpt_tos == ["ann@customer.test"]
        assert parsed(got.data)["Cc"] is None


async def test_a_reply_to_an_idn_domain_reaches_a_relay_without_smtputf8(tmp_path: Path) -> None:
    # The sink, like many relays, offers no SMTPUTF8: ann@bücher.test was "smtp: … requires
    # internationalized email support" and the customer got nothing; its A-label is the same mailbox.
    async with world(tmp_path) as w:
        reply = msgspec.structs.replace(
            reply_to("<c11@customer.test>", cc="bob@b\u00fccher.test,Ann@B\u00fccher.test"),
            contact="ann@b\u00fccher.test",
        )
        await publish(w.nc, reply)
        assert isinstance(sent := await outcome(w.nc, reply), MessageSent), sent
        [got] = await w.sink.wait_for(1)
        assert got.rcpt_tos == ["ann@xn--bcher-kva.test", "bob@xn--bcher-kva.test"]
        assert parsed(got.data)["To"] == "ann@xn--bcher-kva.test"
