"""Inbound SMTP over a real nats-server, with smtplib as the sending MTA.

These share the session's nats-server, so the outbound worker stays off (its durable
work-queue consumer would outlive the test); outbound has its own servers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import smtplib
import ssl
import subprocess
from collections.abc import AsyncIterator
from email import policy as mail_policy
from pathlib import Path
from typing import Any

import nats
import pytest
import structlog
from nats.aio.client import Client as NATS

from connectors.email.connector import EmailConnector
from connectors.email.threads import make_token
from connectors.sdk import registry
from connectors.sdk.runtime import ConnectorRuntime
from events.parking import ParkingLot
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats

from .helpers import inbound_for, mail, msg_id, smtp_send

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {
    "port": 0,
    "smtp_port": 0,
    "domains": ["support.test", "Billing.test"],
    "outbound": False,
    "ack_timeout": 1.0,
    "max_body_bytes": 300_000,
}


@contextlib.asynccontextmanager
async def running(nc: NATS, **extra: Any) -> AsyncIterator[EmailConnector]:
    connector = EmailConnector.from_config({**BASE, **extra})
    runtime = ConnectorRuntime(connector, nc)
    await runtime.start()
    try:
        yield connector
    finally:
        await runtime.stop()


@pytest.fixture
async def email(nc: NATS) -> AsyncIterator[EmailConnector]:
    async with running(nc) as connector:
        yield connector


def addr(connector: EmailConnector) -> tuple[str, int]:
    assert connector.smtp_address is not None
    return connector.smtp_address


def test_registry_loads_email() -> None:
    assert registry.load("email") is EmailConnector


async def test_valid_mail_is_one_event_with_the_fields(nc: NATS, email: EmailConnector, uid: str) -> None:
    token = make_token("cv_" + uid)
    msg = mail(
        uid,
        to=f"support+{token}@support.test",
        subject=f"Re: Invoice question [#{token}]",
        headers={"In-Reply-To": "<rd.rep_1@support.test>", "References": "<a@x.test> <rd.rep_1@support.test>"},
    )
    result = await smtp_send(addr(email), msg.as_bytes(), rcpts=[f"support+{token}@SUPPORT.test"])
    assert result.rcpt == [250] and result.data == 250, result
    [item] = await inbound_for(nc, msg_id(uid))
    m = item.message
    assert item.msg_id == f"email:{msg_id(uid)}"
    assert (m.channel, m.provider, m.sender, m.sender_name) == ("email", "email", "ann@customer.test", "Ann Example")
    assert m.recipient == "support@support.test"
    assert m.text == "Hello, my invoice is wrong."
    assert m.thread_ref == "rd.rep_1@support.test"
    md = m.metadata
    assert md["message_id"] == f"<{msg_id(uid)}>"
    assert md["in_reply_to"] == "<rd.rep_1@support.test>"
    assert md["references"] == "<a@x.test> <rd.rep_1@support.test>"
    assert md["thread_token"] == "cv_" + uid
    assert md["subject_tag"] == "cv_" + uid
    assert md["subject"].startswith("Re: Invoice question")
    assert md["source"] == "smtp"
    assert "auto" not in md
    assert email.metrics["published"] == 1


async def test_recipient_maps_to_the_address_written_to(nc: NATS, email: EmailConnector, uid: str) -> None:
    msg = mail(uid, to="billing@billing.test")
    result = await smtp_send(addr(email), msg.as_bytes(), rcpts=["billing@billing.test"])
    assert result.data == 250
    [item] = await inbound_for(nc, msg_id(uid))
    assert item.message.recipient == "billing@billing.test"


async def test_same_message_id_twice_is_one_event(nc: NATS, email: EmailConnector, uid: str) -> None:
    raw = mail(uid).as_bytes()
    for _ in range(2):
        result = await smtp_send(addr(email), raw)
        assert result.data == 250
    assert len(await inbound_for(nc, msg_id(uid))) == 1
    assert email.metrics["duplicates"] == 1


async def test_unknown_recipient_domain_is_550_and_nothing_published(nc: NATS, email: EmailConnector, uid: str) -> None:
    result = await smtp_send(addr(email), mail(uid).as_bytes(), rcpts=["someone@elsewhere.test"])
    assert result.rcpt == [550]
    assert result.data == 0
    assert await inbound_for(nc, msg_id(uid)) == []


async def test_mixed_recipients_keep_only_ours(nc: NATS, email: EmailConnector, uid: str) -> None:
    rcpts = ["x@elsewhere.test", "support@support.test"]
    result = await smtp_send(addr(email), mail(uid).as_bytes(), rcpts=rcpts)
    assert result.rcpt == [550, 250] and result.data == 250
    [item] = await inbound_for(nc, msg_id(uid))
    assert item.message.metadata["recipients"] == "support@support.test"


async def test_oversize_is_552(nc: NATS, email: EmailConnector, uid: str) -> None:
    big = mail(uid, text="x" * 80 + "\n" * 0, attachments=[("big.bin", "application/octet-stream", b"\0" * 400_000)])
    result = await smtp_send(addr(email), big.as_bytes())
    assert result.data == 552
    assert result.data_text.startswith("5.3.4")
    assert await inbound_for(nc, msg_id(uid)) == []


async def test_unparseable_mail_is_accepted_stored_raw_and_parked(nc: NATS, email: EmailConnector, uid: str) -> None:
    # Refusing it would make the sender's server retry for days, then bounce the customer.
    raw = b"Subject: no sender at all\r\nMessage-ID: <" + uid.encode() + b".0@customer.test>\r\n\r\nhi\r\n"
    result = await smtp_send(addr(email), raw, mail_from="")
    assert result.data == 250, result
    assert await inbound_for(nc, msg_id(uid)) == []
    key = result.data_text.rsplit(" ", 1)[-1]
    record = await ParkingLot(nc.jetstream()).get(key)
    assert record is not None and record.reader == "connector:email" and "From" in record.error
    assert record.data.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    store = await nc.jetstream().object_store("rd_attachments")
    stored = await store.get(record.headers["Relaydesk-Raw-Object"].rsplit("/", 1)[-1])
    assert stored.data == record.data
    # The sender retrying the same mail parks it once.
    again = await smtp_send(addr(email), raw, mail_from="")
    assert again.data == 250 and again.data_text.endswith(key)


async def test_html_only_mail_becomes_text(nc: NATS, email: EmailConnector, uid: str) -> None:
    html = (
        "<html><head><style>p{color:red}</style></head><body><p>Hello&nbsp;<b>team</b>,</p>"
        "<p>my order #42 is <a href='https://shop.test/o/42'>late</a>.</p><ul><li>one</li><li>two</li></ul>"
        "<script>alert(1)</script></body></html>"
    )
    await smtp_send(addr(email), mail(uid, text=None, html=html).as_bytes())
    [item] = await inbound_for(nc, msg_id(uid))
    assert item.message.text == "Hello team,\nmy order #42 is late (https://shop.test/o/42).\n- one\n- two"
    assert item.message.metadata["html_only"] == "true"


async def test_plain_part_is_preferred_over_html(nc: NATS, email: EmailConnector, uid: str) -> None:
    await smtp_send(addr(email), mail(uid, text="plain words", html="<p>html words</p>").as_bytes())
    [item] = await inbound_for(nc, msg_id(uid))
    assert item.message.text == "plain words"


async def test_attachment_metadata_and_object_stored(nc: NATS, email: EmailConnector, uid: str) -> None:
    pdf = b"%PDF-1.4 " + uid.encode() + b" invoice"
    msg = mail(uid, attachments=[("invoice.pdf", "application/pdf", pdf)])
    assert (await smtp_send(addr(email), msg.as_bytes())).data == 250
    [item] = await inbound_for(nc, msg_id(uid))
    [att] = item.message.attachments
    digest = hashlib.sha256(pdf).hexdigest()
    assert (att.name, att.content_type, att.size, att.sha256) == ("invoice.pdf", "application/pdf", len(pdf), digest)
    assert att.url == f"nats-object://rd_attachments/{digest}"
    store = await nc.jetstream().object_store("rd_attachments")
    stored = await store.get(digest)
    assert stored.data == pdf


async def test_auto_reply_is_flagged(nc: NATS, email: EmailConnector, uid: str) -> None:
    msg = mail(uid, subject="Out of office", headers={"Auto-Submitted": "auto-replied"}, text="I am away.")
    await smtp_send(addr(email), msg.as_bytes())
    [item] = await inbound_for(nc, msg_id(uid))
    assert item.message.metadata["auto"] == "auto-reply"


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({"Precedence": "bulk"}, "bulk"),
        ({"List-Id": "<news.shop.test>"}, "bulk"),
        ({"X-Autoreply": "yes"}, "auto-reply"),
        ({"Auto-Submitted": "no"}, None),
    ],
)
async def test_automatic_mail_headers(
    nc: NATS, email: EmailConnector, uid: str, headers: dict[str, str], kind: str | None
) -> None:
    await smtp_send(addr(email), mail(uid, headers=headers).as_bytes())
    [item] = await inbound_for(nc, msg_id(uid))
    assert item.message.metadata.get("auto") == kind


async def test_null_sender_is_automatic(nc: NATS, email: EmailConnector, uid: str) -> None:
    await smtp_send(addr(email), mail(uid).as_bytes(), mail_from="")
    [item] = await inbound_for(nc, msg_id(uid))
    assert item.message.metadata["auto"] == "auto-reply"
    assert item.message.metadata["auto_reason"] == "null sender"


def bounce(uid: str, original_id: str) -> bytes:
    return f"""From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>
To: support@support.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <{uid}.0@customer.test>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

This is the mail system. Your message could not be delivered.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.customer.test

Final-Recipient: rfc822; gone@customer.test
Action: failed
Status: 5.1.1

--B1
Content-Type: text/rfc822-headers

From: support@support.test
Message-ID: <{original_id}>
Subject: Re: x

--B1--
""".encode()


async def test_bounce_is_flagged_and_points_at_our_message(nc: NATS, email: EmailConnector, uid: str) -> None:
    result = await smtp_send(addr(email), bounce(uid, "rd.rep_9@support.test"), mail_from="")
    assert result.data == 250, result
    [item] = await inbound_for(nc, msg_id(uid))
    md = item.message.metadata
    assert md["auto"] == "bounce"
    assert md["bounced_message_id"] == "<rd.rep_9@support.test>"
    assert item.message.thread_ref == "rd.rep_9@support.test"


async def test_quoted_history_is_stripped(nc: NATS, email: EmailConnector, uid: str) -> None:
    text = (
        "Thanks, that fixed it!\n\n"
        "On Mon, Nov 23, 2026 at 10:00 AM Support <support@support.test> wrote:\n"
        "> Please restart the router.\n> \n> Regards\n"
    )
    replying = {"In-Reply-To": "<rd.rp_1@support.test>"}  # only a reply to us has history of ours
    await smtp_send(addr(email), mail(uid, text=text, headers=replying).as_bytes())
    [item] = await inbound_for(nc, msg_id(uid))
    assert item.message.text == "Thanks, that fixed it!"
    assert item.message.metadata["quote_stripped"] == "true"


async def test_html_quoted_history_is_stripped(nc: NATS, email: EmailConnector, uid: str) -> None:
    html = (
        "<div>Still broken.</div><div>On Tue, Nov 24, 2026 at 9:00 AM Support wrote:</div>"
        "<blockquote>Try again</blockquote>"
    )
    replying = {"References": "<rd.rp_1@support.test>"}
    await smtp_send(addr(email), mail(uid, text=None, html=html, headers=replying).as_bytes())
    [item] = await inbound_for(nc, msg_id(uid))
    assert item.message.text == "Still broken."


async def test_mail_without_message_id_is_deduped_by_content(nc: NATS, email: EmailConnector, uid: str) -> None:
    msg = mail(uid)
    del msg["Message-ID"]
    raw = msg.as_bytes(policy=mail_policy.SMTP)
    for _ in range(2):
        assert (await smtp_send(addr(email), raw)).data == 250
    pid = "sha256:" + hashlib.sha256(raw).hexdigest()[:40]
    assert len(await inbound_for(nc, pid)) == 1


async def test_nats_down_is_451(tmp_path: Path, uid: str) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.astart()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)
    try:
        await ensure_streams(nc.jetstream())
        async with running(nc) as connector:
            assert (await smtp_send(addr(connector), mail(uid, n=1).as_bytes())).data == 250
            await server.astop()
            result = await smtp_send(addr(connector), mail(uid, n=2).as_bytes())
            assert result.data == 451
            assert result.data_text.startswith("4.3.0")
            with_attachment = mail(uid, n=3, attachments=[("a.txt", "text/plain", b"x")])
            assert (await smtp_send(addr(connector), with_attachment.as_bytes())).data == 451
            assert connector.metrics["unavailable"] >= 1
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        await server.astop()


def self_signed(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


async def test_starttls_and_auth(nc: NATS, tmp_path: Path, uid: str) -> None:
    cert, key = self_signed(tmp_path)
    settings = {"tls_cert": cert, "tls_key": key, "auth_users": {"relay": "s3cret"}, "auth_required": True}
    async with running(nc, **settings) as connector:
        # No AUTH: refused at MAIL.
        result = await smtp_send(addr(connector), mail(uid, n=1).as_bytes(), starttls=True)
        assert result.mail == 530
        with pytest.raises(Exception, match="535"):
            await smtp_send(addr(connector), mail(uid, n=1).as_bytes(), starttls=True, login=("relay", "wrong"))
        ok = await smtp_send(addr(connector), mail(uid, n=2).as_bytes(), starttls=True, login=("relay", "s3cret"))
        assert ok.data == 250
        # AUTH is not offered before STARTTLS.
        with pytest.raises(Exception, match="AUTH"):
            await smtp_send(addr(connector), mail(uid, n=3).as_bytes(), login=("relay", "s3cret"))
    assert len(await inbound_for(nc, msg_id(uid, 2))) == 1
    assert await inbound_for(nc, msg_id(uid, 1)) == []


def _starttls_twice(address: tuple[str, int]) -> tuple[int, str, int]:
    with smtplib.SMTP(address[0], address[1], timeout=10) as client:
        client.ehlo()
        client.starttls(context=ssl._create_unverified_context())
        client.ehlo()
        code, text = client.docmd("STARTTLS")
        return code, text.decode(), client.noop()[0]


async def test_a_second_starttls_is_refused_and_the_session_goes_on(
    nc: NATS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed(tmp_path)
    async with running(nc, tls_cert=cert, tls_key=key) as connector:
        code, text, after = await asyncio.to_thread(_starttls_twice, addr(connector))
    assert (code, after) == (503, 250)
    assert "TLS already active" in text
    assert "Traceback" not in caplog.text


async def test_smtp_port_taken_is_a_clear_exit(nc: NATS) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        runtime = ConnectorRuntime(EmailConnector.from_config({**BASE, "smtp_port": port}), nc)
        with pytest.raises(SystemExit, match="SMTP"):
            await runtime.start()
        await runtime.stop()
    finally:
        blocker.close()


async def test_a_mail_whose_dmarc_check_failed_is_parked_not_filed(nc: NATS, uid: str) -> None:
    """With ``trusted_authserv_id``, the receiving server's verdict counts: a forged From is
    parked for an operator (counted as forged_sender), never a message of the customer it names."""
    async with running(nc, trusted_authserv_id="mx.support.test") as connector:
        forged = mail(uid, headers={"Authentication-Results": "mx.support.test; dmarc=fail header.from=customer.test"})
        with structlog.testing.capture_logs() as logs:
            result = await smtp_send(addr(connector), forged.as_bytes())
        assert result.data == 250, result
        # Said as what it is: a forged sender, not a mail that could not be read.
        assert [e["event"] for e in logs if e["event"].endswith("_parked")] == ["email.forged_sender_parked"]
        assert await inbound_for(nc, msg_id(uid)) == []
        record = await ParkingLot(nc.jetstream()).get(result.data_text.rsplit(" ", 1)[-1])
        assert record is not None and "DMARC failed at mx.support.test" in record.error
        assert connector.metrics.rejected_by_reason["forged_sender"] == 1

        vouched = mail(uid, n=1, headers={"Authentication-Results": "mx.support.test; dmarc=pass"})
        assert (await smtp_send(addr(connector), vouched.as_bytes())).data == 250
        [published] = await inbound_for(nc, msg_id(uid, 1), wait=10.0)
        assert published.message.metadata["dmarc"] == "pass"


async def test_sessions_over_the_limit_are_told_to_come_back_later(nc: NATS, uid: str) -> None:
    """Found by a hostile-mail audit: nothing bounded the sessions open at once, and each may
    hold a whole mail in memory (max_body_bytes): a thousand slow senders could take the
    connector's memory. One over ``max_smtp_sessions`` is answered 421 and closed; a session
    that ends makes room again."""
    async with running(nc, max_smtp_sessions=2) as connector:
        host, port = addr(connector)
        held = [await asyncio.open_connection(host, port) for _ in range(2)]
        for reader, _ in held:
            assert (await reader.readline()).startswith(b"220 ")
        reader, writer = await asyncio.open_connection(host, port)
        assert (await reader.readline()).startswith(b"421 4.3.2")
        assert await reader.read() == b""  # closed by the server
        writer.close()
        for _, w in held:
            w.close()
            await w.wait_closed()

        async def delivered() -> bool:
            try:
                await smtp_send(addr(connector), mail(uid, text="after the crowd left").as_bytes())
            except (smtplib.SMTPException, OSError):
                return False
            return True

        async with asyncio.timeout(15):
            while not await delivered():
                await asyncio.sleep(0.05)
        assert await inbound_for(nc, msg_id(uid), wait=10)


async def test_a_mail_that_takes_long_to_parse_holds_nothing_else(
    nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a hostile-mail audit: a crafted mail costs seconds of parsing even within the
    bounds, and it was parsed on the event loop, holding every other SMTP session, the health
    checks and the replies going out. Parsed in a thread now: while one parse is under way
    the connector's /healthz answers."""
    import threading

    import aiohttp

    from connectors.email import connector as email_connector

    entered, release = threading.Event(), threading.Event()
    seen_release: list[bool] = []
    real = email_connector.parse_email

    def slow_parse(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        seen_release.append(release.wait(5))  # on the event loop this would hold it 5 s
        return real(*args, **kwargs)

    monkeypatch.setattr(email_connector, "parse_email", slow_parse)
    connector = EmailConnector.from_config(BASE)
    runtime = ConnectorRuntime(connector, nc)
    [base] = await runtime.start()
    try:
        sending = asyncio.create_task(smtp_send(addr(connector), mail(uid).as_bytes()))
        assert await asyncio.to_thread(entered.wait, 10)
        async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as response:
            assert response.status == 200
        release.set()
        assert (await sending).data == 250
        assert seen_release == [True], "the parse held the event loop: /healthz waited for it"
    finally:
        release.set()
        await runtime.stop()
