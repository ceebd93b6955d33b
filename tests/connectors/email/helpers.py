"""Shared helpers for the email connector tests: an smtplib client, an aiosmtpd sink, mail builders."""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP, Envelope, Session
from nats.aio.client import Client as NATS

from connectors.sdk.conformance.helpers import Published, read_inbound


@dataclass
class SmtpResult:
    mail: int = 0
    rcpt: list[int] = field(default_factory=list)
    data: int = 0
    data_text: str = ""


def _send(
    host: str,
    port: int,
    raw: bytes,
    mail_from: str,
    rcpts: Sequence[str],
    *,
    starttls: bool = False,
    login: tuple[str, str] | None = None,
    mail_options: Sequence[str] = (),
) -> SmtpResult:
    result = SmtpResult()
    raw = re.sub(rb"(?<!\r)\n", b"\r\n", raw)  # smtplib sends bytes as they are: SMTP wants CRLF
    with smtplib.SMTP(host, port, timeout=15) as client:
        client.ehlo()
        if starttls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client.starttls(context=context)
            client.ehlo()
        if login:
            client.login(*login)
        # SMTPUTF8 (RFC 6531) makes smtplib send MAIL FROM and RCPT TO as UTF-8.
        result.mail = client.mail(mail_from, list(mail_options))[0]
        if result.mail != 250:
            return result
        for rcpt in rcpts:
            result.rcpt.append(client.rcpt(rcpt)[0])
        if 250 not in result.rcpt:
            return result
        code, text = client.data(raw)
        result.data, result.data_text = code, text.decode("utf-8", "replace")
    return result


async def smtp_send(
    address: tuple[str, int],
    raw: bytes,
    *,
    mail_from: str = "ann@customer.test",
    rcpts: Sequence[str] = ("support@support.test",),
    starttls: bool = False,
    login: tuple[str, str] | None = None,
    mail_options: Sequence[str] = (),
) -> SmtpResult:
    """Send with smtplib in a thread (the server runs on this test's event loop)."""
    return await asyncio.to_thread(
        _send, address[0], address[1], raw, mail_from, rcpts, starttls=starttls, login=login, mail_options=mail_options
    )


def mail(
    uid: str,
    *,
    n: int = 0,
    text: str | None = "Hello, my invoice is wrong.",
    html: str | None = None,
    to: str = "support@support.test",
    subject: str = "Invoice question",
    headers: dict[str, str] | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Ann Example <ann@Customer.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uid}.{n}@customer.test>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    for name, value in (headers or {}).items():
        msg[name] = value
    if text is not None:
        msg.set_content(text)
    if html is not None:
        if text is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    for name, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def msg_id(uid: str, n: int = 0) -> str:
    return f"{uid}.{n}@customer.test"


async def inbound_for(nc: NATS, provider_message_id: str, *, wait: float = 0.0) -> list[Published]:
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        published = await read_inbound(nc.jetstream(), "email")
        found = [p for p in published if p.message.provider_message_id == provider_message_id]
        if found or asyncio.get_running_loop().time() >= deadline:
            return found
        await asyncio.sleep(0.1)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class SinkHandler:
    """An aiosmtpd handler that records every message; ``answers`` are DATA replies to
    give first (e.g. "451 4.3.0 busy"), then "250 OK"."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(
            Received(envelope.mail_from or "", list(envelope.rcpt_tos), bytes(envelope.original_content or b""))
        )
        if self.answers:
            return self.answers.pop(0)
        return "250 OK"


class SmtpSink:
    """A local SMTP server (aiosmtpd) standing in for the outbound mail provider."""

    def __init__(self, handler: SinkHandler | None = None) -> None:
        self.handler = handler or SinkHandler()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(self.handler, hostname="sink.test", loop=loop), host="127.0.0.1", port=0
        )
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None

    async def wait_for(self, n: int = 1, timeout: float = 10.0) -> list[Received]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(self.handler.received) < n:
                    await asyncio.sleep(0.02)
        return list(self.handler.received)
