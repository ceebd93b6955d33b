"""Bounces of our replies: the reply goes out to a local aiosmtpd sink, the DSN comes back
by SMTP to the connector, which reports it as the reply's outcome on ``rd.inbound.email``;
intake (running here, as in production) gives the conversation one ``DeliveryFailed``. Each
world has a nats-server of its own (the outbound worker's and intake's durable consumers must
not outlive it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from connectors.email.automatic import DeliveryReport, bounce_reason
from connectors.email.bounces import (
    CopyBounce,
    SentReply,
    bounce_report,
    customer_failure,
    failed_recipients,
    our_id,
    recipient_hash,
    sent_key,
)
from connectors.email.connector import EmailConnector
from connectors.email.parse import parse_email
from connectors.email.settings import EmailSettings
from connectors.sdk.conformance import read_outcomes
from connectors.sdk.runtime import ConnectorRuntime
from events import subjects
from events.codec import encode
from events.model import DeliverReply, DeliveryFailed, MessageSent
from events.store import Append, EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats

from ..intake_rig import intake_caught_up, make_intake, request_reply, running_intake
from .helpers import SmtpSink, inbound_for, smtp_send

DIAGNOSTIC = "smtp; 550 5.1.1 <ann@customer.test>: Recipient address rejected: User unknown"
REASON = "bounced: 5.1.1 (smtp; 550 5.1.1 [address]: Recipient address rejected: User unknown)"


def dsn(bounce_id: str, original_id: str, *, action: str = "failed", status: str = "5.1.1") -> bytes:
    """A Postfix-style delivery-status report about ``original_id``."""
    return f"""From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>
To: support@support.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <{bounce_id}>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

This is the mail system. Your message to <ann@customer.test> could not be delivered.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.customer.test

Final-Recipient: rfc822; ann@customer.test
Original-Recipient: rfc822;ann@customer.test
Action: {action}
Status: {status}
Remote-MTA: dns; mx2.customer.test
Diagnostic-Code: {DIAGNOSTIC}

--B1
Content-Type: text/rfc822-headers

From: Acme Support <support@support.test>
To: ann@customer.test
Message-ID: <{original_id}>
Subject: Re: Invoice question

--B1--
""".encode()


# -- pure ----------------------------------------------------------------------------------


def test_our_ids_and_keys() -> None:
    assert our_id("<rd.rep_1@support.test>") == "rep_1"
    assert our_id("rd.rep_1@support.test") == "rep_1"
    assert our_id("<c1@customer.test>") is None and our_id(None) is None
    assert sent_key("rep_1") == "email.sent.rep_1"
    odd = sent_key("a..b.")
    assert odd.startswith("email.sent.x.") and ".." not in odd and not odd.endswith(".")


def test_dsn_report_and_reason_without_addresses() -> None:
    settings = EmailSettings(domains=["support.test"])
    parsed = parse_email(
        dsn("b1@mx.customer.test", "rd.rep_1@support.test"),
        recipients=["support@support.test"], settings=settings, received_at=datetime.now(UTC), source="smtp",
        mail_from="",
    )  # fmt: skip
    assert parsed.report == DeliveryReport(action="failed", status="5.1.1", diagnostic=DIAGNOSTIC)
    assert bounce_reason(parsed.report) == REASON
    assert "@" not in bounce_reason(parsed.report)
    assert bounce_reason(None) == "bounced: no delivery-status report"
    assert bounce_reason(DeliveryReport(action="failed", status="5.2.2")) == "bounced: 5.2.2"
    assert len(bounce_reason(DeliveryReport(action="failed", diagnostic="x" * 500))) == 200


# -- over NATS ------------------------------------------------------------------------------


@dataclass
class World:
    server: EmbeddedNats
    nc: NATS
    store: EventStore
    sink: SmtpSink
    connector: EmailConnector

    @property
    def smtp(self) -> tuple[str, int]:
        assert self.connector.smtp_address is not None
        return self.connector.smtp_address


@contextlib.asynccontextmanager
async def world(tmp_path: Path, *, intake: bool = True, **extra: Any) -> AsyncIterator[World]:
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.astart()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)
    sink = SmtpSink()
    runtime: ConnectorRuntime | None = None
    try:
        await ensure_streams(nc.jetstream())
        intake_running = running_intake(server.url, nc) if intake else contextlib.nullcontext()
        port = await sink.start()
        settings = {
            "port": 0,
            "smtp_port": 0,
            "domains": ["support.test"],
            "send_host": "127.0.0.1",
            "send_port": port,
            "from_address": "support@support.test",
            "deliver_backoff": 0.05,
            "outbound_fetch_timeout": 0.5,
            "ack_timeout": 1.0,
            **extra,
        }
        connector = EmailConnector.from_config(settings)
        runtime = ConnectorRuntime(connector, nc)
        await runtime.start()
        async with intake_running:
            yield World(server, nc, EventStore(nc, nc.jetstream()), sink, connector)
    finally:
        if runtime is not None:
            await runtime.stop()
        with contextlib.suppress(Exception):
            await nc.close()
        await sink.stop()
        await server.astop()


def new_reply() -> DeliverReply:
    return DeliverReply(
        conversation_id="cv_" + uuid.uuid4().hex[:20],
        customer_id="cu_" + uuid.uuid4().hex[:20],
        channel="email",
        reply_id="rep_" + uuid.uuid4().hex[:12],
        contact="ann@customer.test",
        text="The corrected invoice is attached to your account.",
        thread_ref="c1@customer.test",
        metadata={"subject": "Invoice question"},
    )


async def conversation_events(store: EventStore, reply: DeliverReply) -> list[Any]:
    return [s.event for s in await store.read(subjects.conversation(reply.customer_id, reply.conversation_id))]


async def send_reply(w: World, reply: DeliverReply, *, logged: bool = True) -> str:
    """Ask for the reply (``ReplyRequested``) and publish the command, wait for its outcome
    (``MessageSent`` on the log when intake runs, else the report); the Message-ID the sink
    received (bare)."""
    await request_reply(w.store, reply)
    await w.nc.jetstream().publish(subjects.outbound("email"), encode(reply), headers={"Nats-Msg-Id": reply.reply_id})
    async with asyncio.timeout(15):
        while not (
            any(isinstance(e, MessageSent) for e in await conversation_events(w.store, reply))
            if logged
            else await read_outcomes(w.nc.jetstream(), "email", reply.reply_id)
        ):
            await asyncio.sleep(0.05)
    [got] = await w.sink.wait_for(1)
    sent = message_from_bytes(got.data, policy=policy.default)
    message_id = str(sent["Message-ID"]).strip("<>")
    assert message_id == f"rd.{reply.reply_id}@support.test"
    return message_id


def failures(events: list[Any]) -> list[DeliveryFailed]:
    return [e for e in events if isinstance(e, DeliveryFailed)]


@pytest.mark.integration
async def test_bounce_of_our_reply_is_one_delivery_failed(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        reply = new_reply()
        message_id = await send_reply(w, reply)
        entry = await (await w.nc.jetstream().key_value(subjects.STATE_BUCKET)).get(f"email.sent.{reply.reply_id}")
        assert entry.value is not None and reply.conversation_id.encode() in entry.value

        bounce_id = f"b.{uuid.uuid4().hex[:8]}@mx.customer.test"
        for _ in range(2):  # the MTA did not see our 250 and sends it again
            result = await smtp_send(w.smtp, dsn(bounce_id, message_id), mail_from="")
            assert result.data == 250, result
        # Another MTA's report of the same failure, other bytes and Message-ID.
        other = await smtp_send(w.smtp, dsn("x." + bounce_id, message_id), mail_from="")
        assert other.data == 250

        # Reported once (the MTA's retry and the other report are duplicates of it)...
        reports = await read_outcomes(w.nc.jetstream(), "email", reply.reply_id)
        assert [(r.report.outcome, r.msg_id) for r in reports] == [
            ("sent", f"email.outcome:{reply.reply_id}"),
            ("bounced", f"email.bounce:{reply.reply_id}"),
        ]
        # ... and recorded by intake as one DeliveryFailed.
        await intake_caught_up(w.nc)
        events = await conversation_events(w.store, reply)
        [failed] = failures(events)
        assert failed.reply_id == reply.reply_id and failed.channel == "email"
        assert failed.customer_id == reply.customer_id and failed.conversation_id == reply.conversation_id
        assert failed.reason == REASON
        assert [type(e).__name__ for e in events] == ["ReplyRequested", "MessageSent", "DeliveryFailed"]
        # Reported, not published as a customer message: intake would only drop it.
        assert await inbound_for(w.nc, bounce_id) == []
        assert w.connector.metrics["published"] == 1
        assert w.connector.metrics["duplicates"] == 2


@pytest.mark.integration
async def test_bounce_after_the_dedupe_window_still_appends_once(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        js = w.nc.jetstream()
        for stream in (subjects.EVENTS_STREAM, subjects.INBOUND_STREAM):
            config = (await js.stream_info(stream)).config
            await js.update_stream(replace(config, duplicate_window=0.5))
        reply = new_reply()
        message_id = await send_reply(w, reply)
        assert (await smtp_send(w.smtp, dsn("b1@mx.customer.test", message_id), mail_from="")).data == 250
        # Something else happens on the conversation, and the dedupe window passes.
        note = MessageSent(
            at=datetime.now(UTC),
            customer_id=reply.customer_id,
            conversation_id=reply.conversation_id,
            channel="email",
            reply_id="rep_other",
        )
        await w.store.append(Append(note))
        await asyncio.sleep(1.0)  # past both dedupe windows: the bounce is reported again
        assert (await smtp_send(w.smtp, dsn("b1@mx.customer.test", message_id), mail_from="")).data == 250
        bounces = [r for r in await read_outcomes(js, "email", reply.reply_id) if r.report.outcome == "bounced"]
        assert len(bounces) == 2
        await intake_caught_up(w.nc)
        assert len(failures(await conversation_events(w.store, reply))) == 1


@pytest.mark.integration
async def test_a_bounce_report_handled_again_beyond_the_window_appends_once(tmp_path: Path) -> None:
    async with world(tmp_path, intake=False) as w:
        js = w.nc.jetstream()
        config = (await js.stream_info(subjects.EVENTS_STREAM)).config
        await js.update_stream(replace(config, duplicate_window=0.5))
        reply = new_reply()
        await request_reply(w.store, reply)
        sent = SentReply(
            reply_id=reply.reply_id,
            customer_id=reply.customer_id,
            conversation_id=reply.conversation_id,
            sent_at=datetime.now(UTC),
        )
        intake = await make_intake(w.nc)
        report = bounce_report(sent, "bounced: 5.1.1", datetime.now(UTC))
        assert await intake.handle(report) == reply.conversation_id
        await asyncio.sleep(0.8)  # past the log's dedupe window: only the history can tell
        assert await intake.handle(report) is None
        [failed] = failures(await conversation_events(w.store, reply))
        assert failed.reason == "bounced: 5.1.1"


@pytest.mark.integration
async def test_unknown_ids_and_delay_reports_append_nothing(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        reply = new_reply()
        message_id = await send_reply(w, reply)
        uid = uuid.uuid4().hex[:8]
        # Ours in form, but never sent by us (or sent before bounces were remembered).
        unknown = await smtp_send(w.smtp, dsn(f"u.{uid}@mx.test", f"rd.rep_never_{uid}@support.test"), mail_from="")
        assert unknown.data == 250
        # Not ours at all.
        foreign = await smtp_send(w.smtp, dsn(f"f.{uid}@mx.test", f"{uid}@elsewhere.test"), mail_from="")
        assert foreign.data == 250
        # A delay warning about our reply is not a failure.
        delayed = dsn(f"d.{uid}@mx.test", message_id, action="delayed", status="4.4.1")
        assert (await smtp_send(w.smtp, delayed, mail_from="")).data == 250

        everything = [s.event for s in await w.store.read(subjects.EVENTS_ALL)]
        assert failures(everything) == []
        # These go on as before: published, flagged as bounces, for intake to drop.
        for bounce_id in (f"u.{uid}@mx.test", f"f.{uid}@mx.test", f"d.{uid}@mx.test"):
            [item] = await inbound_for(w.nc, bounce_id, wait=2.0)
            assert item.message.metadata["auto"] == "bounce"


@pytest.mark.integration
async def test_nats_away_is_451_and_the_retry_reports_it(tmp_path: Path) -> None:
    async with world(tmp_path, intake=False) as w:
        reply = new_reply()
        message_id = await send_reply(w, reply, logged=False)
        await w.server.astop()
        result = await smtp_send(w.smtp, dsn("b2@mx.customer.test", message_id), mail_from="")
        assert result.data == 451 and result.data_text.startswith("4.3.0")
        await w.server.astart()
        async with asyncio.timeout(10):
            while not w.nc.is_connected:
                await asyncio.sleep(0.05)
        result = await smtp_send(w.smtp, dsn("b2@mx.customer.test", message_id), mail_from="")
        assert result.data == 250, result
        reports = await read_outcomes(w.nc.jetstream(), "email", reply.reply_id)
        [bounce] = [r for r in reports if r.report.outcome == "bounced"]
        assert isinstance(bounce.recorded, DeliveryFailed) and bounce.recorded.reason == REASON


# -- a bounce of a Cc'd copy -------------------------------------------------------------------

CAROL_DIAGNOSTIC = "smtp; 550 5.1.1 <carol@partner.test>: mailbox unavailable"


def dsn_for(bounce_id: str, original_id: str, failed: list[tuple[str, str]]) -> bytes:
    """A delivery-status report about ``original_id`` with one ``Action: failed`` block per
    (address, diagnostic) in ``failed``."""
    blocks = "\n".join(
        f"Final-Recipient: rfc822; {address}\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: {diagnostic}\n"
        for address, diagnostic in failed
    )
    return f"""From: Mail Delivery System <MAILER-DAEMON@mx.partner.test>
To: support@support.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <{bounce_id}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

Your message could not be delivered to some recipients.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.partner.test

{blocks}
--B1
Content-Type: text/rfc822-headers

From: Acme Support <support@support.test>
To: ann@customer.test
Cc: carol@partner.test
Message-ID: <{original_id}>

--B1--
""".encode()


def test_whom_a_report_names_decides_whose_copy_failed() -> None:
    sent = SentReply(
        reply_id="rep_1",
        customer_id="cu_1",
        conversation_id="cv_1",
        sent_at=datetime.now(UTC),
        to_hash=recipient_hash("rep_1", "Ann@Customer.test"),
    )
    carol = failed_recipients(dsn_for("b@mx", "rd.rep_1@support.test", [("carol@partner.test", CAROL_DIAGNOSTIC)]))
    assert [f.addresses for f in carol] == [("carol@partner.test",)]
    assert customer_failure(sent, carol, carol[0].report) == CopyBounce(failed=1)
    both = failed_recipients(
        dsn_for("b@mx", "x", [("carol@partner.test", CAROL_DIAGNOSTIC), ("<ANN@customer.test>", DIAGNOSTIC)])
    )
    # The customer's block is what the reason says, not the first one's.
    assert customer_failure(sent, both, both[0].report) == DeliveryReport("failed", "5.1.1", DIAGNOSTIC)
    # Entries from before the address was kept, and reports naming nobody: as before.
    old = SentReply(reply_id="rep_1", customer_id="cu_1", conversation_id="cv_1", sent_at=datetime.now(UTC))
    assert customer_failure(old, carol, carol[0].report) == carol[0].report
    nameless = failed_recipients(dsn_for("b@mx", "x", [("", CAROL_DIAGNOSTIC)]))
    assert nameless[0].addresses == () and customer_failure(sent, nameless, None) is None
    assert failed_recipients(b"From: a@b.test\r\n\r\nno report\r\n") == []
    # The entry keeps no address in clear.
    assert b"ann@" not in msgspec.json.encode(sent).lower()


def reply_to_all() -> DeliverReply:
    reply = new_reply()
    return msgspec.structs.replace(reply, metadata={**reply.metadata, "cc": "carol@partner.test"})


@pytest.mark.integration
async def test_a_bounce_of_a_cc_copy_does_not_fail_the_reply(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        reply = reply_to_all()
        message_id = await send_reply(w, reply)
        [sent] = await w.sink.wait_for(1)
        assert sorted(sent.rcpt_tos) == ["ann@customer.test", "carol@partner.test"]

        carol = dsn_for("b1@mx.partner.test", message_id, [("carol@partner.test", CAROL_DIAGNOSTIC)])
        assert (await smtp_send(w.smtp, carol, mail_from="")).data == 250
        await intake_caught_up(w.nc)
        assert [r.report.outcome for r in await read_outcomes(w.nc.jetstream(), "email", reply.reply_id)] == ["sent"]
        assert failures(await conversation_events(w.store, reply)) == []
        assert await inbound_for(w.nc, "b1@mx.partner.test") == []  # not a customer message either
        assert w.connector.metrics.rejected_by_reason["bounce_of_copy"] == 1

        # Ann's copy failing too (in the second block) is the reply failed, for Ann's reason.
        both = dsn_for(
            "b2@mx.customer.test",
            message_id,
            [("carol@partner.test", CAROL_DIAGNOSTIC), ("ann@customer.test", DIAGNOSTIC)],
        )
        assert (await smtp_send(w.smtp, both, mail_from="")).data == 250
        await intake_caught_up(w.nc)
        [failed] = failures(await conversation_events(w.store, reply))
        assert failed.reason == REASON


@pytest.mark.integration
async def test_a_reply_remembered_without_its_address_fails_on_any_bounce_as_before(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        reply = reply_to_all()
        message_id = await send_reply(w, reply)
        # The entry as versions before this one wrote it: no to_hash.
        kv = await w.nc.jetstream().key_value(subjects.STATE_BUCKET)
        entry = {k: v for k, v in json.loads((await kv.get(f"email.sent.{reply.reply_id}")).value or b"").items()}
        assert entry.pop("to_hash")
        await kv.put(f"email.sent.{reply.reply_id}", json.dumps(entry).encode())

        carol = dsn_for("b3@mx.partner.test", message_id, [("carol@partner.test", CAROL_DIAGNOSTIC)])
        assert (await smtp_send(w.smtp, carol, mail_from="")).data == 250
        await intake_caught_up(w.nc)
        [failed] = failures(await conversation_events(w.store, reply))
        assert failed.reason.startswith("bounced: 5.1.1") and "@" not in failed.reason
