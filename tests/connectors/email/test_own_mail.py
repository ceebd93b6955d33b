"""Relaydesk's own mail come back is never a customer's (a mail loop): an agent's reply, as the
connector sent it, fed back to the SMTP listener (a Cc'd address forwarding to support, a
journalled mailbox), and an agent notice of the delivery service, as it sent it. Each world
runs its own nats-server with intake (which would make the customer and the conversation),
as in production."""

from __future__ import annotations

import uuid
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import ClientSession
from nats.aio.client import Client as NATS

from connectors.email.connector import EmailConnector, sign
from connectors.email.settings import EmailSettings
from connectors.sdk.conformance import read_inbound
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import ConversationOpened, MessageReceived
from services.delivery.render import email as notice_email
from services.delivery.senders import Senders
from services.delivery.settings import DeliverySettings, Endpoint

from ..intake_rig import intake_caught_up, request_reply
from .helpers import mail, smtp_send
from .test_bounces import World, new_reply, send_reply, world

pytestmark = pytest.mark.integration

NOTICE = {
    "notice": "message",
    "conversation": {"id": "cv_1", "channel": "email"},
    "customer": {"id": "cu_1", "contact": "b•••@customer.test"},
    "preview": "Bob's words, not to be filed under anyone else",
    "links": {"console": "http://127.0.0.1:8080/console#conversation=cv_1"},
}


async def opened_conversations(w: World) -> list[Any]:
    await intake_caught_up(w.nc)
    everything = [s.event for s in await w.store.read(subjects.EVENTS_ALL)]
    return [e for e in everything if isinstance(e, ConversationOpened | MessageReceived)]


def own_mail_dropped(connector: EmailConnector) -> int:
    return connector.metrics.rejected_by_reason["own_mail"]


async def test_an_agents_reply_fed_back_is_not_a_customer(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        reply = new_reply()
        reply = msgspec.structs.replace(reply, metadata={**reply.metadata, "cc": "carol@partner.test"})
        await send_reply(w, reply)
        [sent] = await w.sink.wait_for(1)
        assert "carol@partner.test" in str(message_from_bytes(sent.data, policy=policy.default)["Cc"])
        # Carol's mailbox forwards it to support; a journal copies it there too.
        for mail_from in ("carol@partner.test", "journal@support.test"):
            result = await smtp_send(w.smtp, sent.data, mail_from=mail_from, rcpts=["support@support.test"])
            assert result.data == 250, result  # refused, it would bounce to us: one more turn
        assert await read_inbound(w.nc.jetstream(), "email") == []
        assert await opened_conversations(w) == []
        assert own_mail_dropped(w.connector) == 2


async def test_our_reply_from_another_of_our_addresses_is_ours_by_its_message_id(tmp_path: Path) -> None:
    """A reply goes out From the address the customer wrote to (billing@…): not one of our
    sending addresses, but its Message-ID is ours."""
    async with world(tmp_path, domains=["support.test", "billing.test"]) as w:
        reply = new_reply()
        reply = msgspec.structs.replace(reply, metadata={**reply.metadata, "from": "billing@billing.test"})
        await request_reply(w.store, reply)
        await w.nc.jetstream().publish(
            subjects.outbound("email"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id}
        )
        [sent] = await w.sink.wait_for(1)
        written = message_from_bytes(sent.data, policy=policy.default)
        assert str(written["From"]) == "billing@billing.test"
        assert str(written["Message-ID"]) == f"<rd.{reply.reply_id}@billing.test>"
        assert (await smtp_send(w.smtp, sent.data, rcpts=["billing@billing.test"])).data == 250
        assert await opened_conversations(w) == []
        assert own_mail_dropped(w.connector) == 1


async def test_an_agent_notice_fed_back_with_the_default_settings_is_not_a_customer(tmp_path: Path) -> None:
    """The delivery service's defaults (smtp_from relaydesk@localhost) inside the connector's
    default domains (localhost): the notice, sent by the delivery service itself to an agent
    at localhost, reaches the connector. Nothing becomes a customer."""
    # Both defaults, as `relaydesk up` runs them with no [connectors.email] / [delivery] table.
    assert EmailSettings().domain_set() == {"localhost"} and EmailSettings().from_address == ""
    assert DeliverySettings().smtp_from == "relaydesk@localhost"
    async with world(tmp_path, domains=["localhost"], from_address="") as w:
        host, port = w.smtp
        senders = Senders(DeliverySettings(smtp_host=host, smtp_port=port))
        try:
            outcome = await senders.send(
                Endpoint(kind="email", address="ava@localhost"), "dl-7-ava-email-1-ava", NOTICE
            )
        finally:
            await senders.close()
        assert outcome.ok, outcome
        assert await read_inbound(w.nc.jetstream(), "email") == []
        assert await opened_conversations(w) == []
        assert own_mail_dropped(w.connector) == 1


async def test_a_notice_whose_from_a_forwarder_rewrote_is_ours_by_its_header(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        notice = notice_email(NOTICE, sender="relaydesk@support.test", to="ava@support.test", delivery_id="dl-8")
        del notice["From"], notice["Message-ID"]
        notice["From"] = "Relaydesk via Team <team@lists.partner.test>"  # DMARC rewriting by a list
        notice["Message-ID"] = f"<{uuid.uuid4().hex}@lists.partner.test>"
        assert (await smtp_send(w.smtp, notice.as_bytes(), mail_from="team@lists.partner.test")).data == 250
        assert await read_inbound(w.nc.jetstream(), "email") == []
        assert await opened_conversations(w) == []
        assert own_mail_dropped(w.connector) == 1


async def test_an_answer_to_a_notice_is_not_a_customer(tmp_path: Path) -> None:
    """An agent answering the notice (or a responder ignoring Auto-Submitted): not a customer."""
    async with world(tmp_path) as w:
        notice = notice_email(NOTICE, sender="relaydesk@support.test", to="ava@support.test", delivery_id="dl-9")
        answer = mail(uuid.uuid4().hex[:8], text="I am out of the office until Monday.", subject="Re: [Relaydesk]")
        del answer["From"]
        answer["From"] = "Ava <ava@support.test>"
        answer["In-Reply-To"] = str(notice["Message-ID"])
        assert (await smtp_send(w.smtp, answer.as_bytes(), mail_from="ava@support.test")).data == 250
        assert await opened_conversations(w) == []
        assert own_mail_dropped(w.connector) == 1


async def test_customers_mail_answering_us_or_looking_like_us_still_arrives(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        uid = uuid.uuid4().hex[:8]
        # The customer answers our reply (In-Reply-To one of our ids): their mail, of course.
        answer = mail(uid, n=1, headers={"In-Reply-To": "<rd.rep_1@support.test>"})
        # A Message-ID of our form, at another domain: somebody else's.
        lookalike = mail(uid, n=2)
        del lookalike["Message-ID"]
        lookalike["Message-ID"] = f"<rd.{uid}@customer.test>"
        for raw in (answer, lookalike):
            assert (await smtp_send(w.smtp, raw.as_bytes())).data == 250
        assert own_mail_dropped(w.connector) == 0
        published = {p.message.provider_message_id for p in await read_inbound(w.nc.jetstream(), "email")}
        assert published == {f"{uid}.1@customer.test", f"rd.{uid}@customer.test"}


async def test_own_mail_over_http_is_accepted_and_not_published(nc: NATS) -> None:
    connector = EmailConnector.from_config(
        {"port": 0, "smtp_enabled": False, "outbound": False, "domains": ["support.test"], "http_secret": "s3cret"}
    )
    runtime = ConnectorRuntime(connector, nc)
    [url] = await runtime.start()
    try:
        body = notice_email(NOTICE, sender="relaydesk@localhost", to="ava@support.test", delivery_id="dl-10").as_bytes()
        headers = {"X-Relaydesk-Signature": sign("s3cret", body), "X-Envelope-To": "support@support.test"}
        async with ClientSession() as http, http.post(url + "/email/inbound", data=body, headers=headers) as answer:
            assert answer.status == 200
            assert await answer.json() == {"accepted": 0, "dropped": "own_mail"}
    finally:
        await runtime.stop()
    assert own_mail_dropped(connector) == 1
