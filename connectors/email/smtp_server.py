"""Inbound SMTP with aiosmtpd, served on the connector's own event loop.

``250`` only after JetStream acknowledged the message (or, for a message that cannot be
parsed, after it was stored raw and parked: a mail is never refused for its content);
``451 4.3.0`` when NATS did not answer; ``550 5.1.1`` for recipients outside ``domains``;
``552 5.3.4`` over ``max_body_bytes``. SMTPUTF8 (RFC 6531) is offered and accepted on
``MAIL FROM``: raw UTF-8 in addresses and header fields."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, AnyStr

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from connectors.sdk import Malformed, Unavailable
from events.skips import count_skip

from . import threads
from .settings import EmailSettings

log = structlog.get_logger("relaydesk.connector.email.smtp")
# aiosmtpd logs every sender and recipient address at INFO on "mail.log": keep it quiet.
logging.getLogger("mail.log").setLevel(logging.WARNING)

# (raw, envelope recipients, envelope sender) -> queue id (a stream sequence or a parked
# record's key); raises Unavailable (or Malformed, answered 554, from an ingest that refuses).
Ingest = Callable[[bytes, list[str], str], Awaitable[str]]
Reject = Callable[[str], None]

TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
MAX_LINE_BYTES = 1024 * 1024  # one line of a mail (or command) the listener reads


BUSY = "421 4.3.2 Too many connections, try again later"


class Sessions:
    """The SMTP sessions open now, against ``max_smtp_sessions``. Found by a hostile-mail
    audit: nothing bounded them, and each may hold a whole mail in memory (``max_body_bytes``,
    25 MiB by default): a thousand slow senders could take the connector's memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0


class _RelaydeskSMTP(SMTP):
    """aiosmtpd's SMTP with enhanced status codes on its own size refusals, and a second
    STARTTLS refused (aiosmtpd would answer 220 and then fail the handshake inside the TLS
    layer, with tracebacks in the log). Lines up to ``MAX_LINE_BYTES``: aiosmtpd refuses a
    mail with a line over RFC 5321's 1,000 octets ``500`` (its sender bounces it), and senders
    do send unwrapped HTML lines; its reader buffers at most twice this per connection."""

    line_length_limit = MAX_LINE_BYTES
    sessions: Sessions | None = None
    _counted = False
    _turned_away = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sessions = self.sessions
        if sessions is not None and sessions.open >= sessions.limit:
            # Before the greeting: a sender reads 421 as "try again later" (RFC 5321 3.8).
            sessions.refused += 1
            log.warning("email.smtp_busy", open=sessions.open, limit=sessions.limit, refused=sessions.refused)
            count_skip("email.smtp_busy")
            self._turned_away = True
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(f"{BUSY}\r\n".encode())
            transport.close()
            return
        if sessions is not None:
            sessions.open += 1
            self._counted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted and self.sessions is not None:
            self.sessions.open -= 1
            self._counted = False
        if not self._turned_away:  # a session aiosmtpd never started has nothing to end
            super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and status.startswith("552 Error"):
            status = TOO_BIG
        await super().push(status)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None:
            log.info("email.smtp_starttls_repeated")
            await self.push("503 5.5.1 TLS already active")
            return
        await super().smtp_STARTTLS(arg)


class EmailHandler:
    def __init__(self, settings: EmailSettings, ingest: Ingest, reject: Reject) -> None:
        self.settings = settings
        self.domains = settings.domain_set()
        self.ingest = ingest
        self.reject = reject

    def accepts(self, address: str) -> bool:
        a = threads.split_address(address)
        return bool(a.domain) and a.domain in self.domains and "@" in a.base

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.accepts(address):
            self.reject("recipient")
            return "550 5.1.1 Recipient address rejected: domain not handled here"
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        if len(raw) > self.settings.max_body_bytes:
            self.reject("too_large")
            return TOO_BIG
        try:
            seq = await self.ingest(bytes(raw), list(envelope.rcpt_tos), envelope.mail_from or "")
        except Malformed as err:
            self.reject("malformed")
            return f"554 5.6.0 {err.reason}"
        except Unavailable as err:
            log.warning("email.smtp_unavailable", reason=err.reason)
            return "451 4.3.0 Temporary failure, please try again later"
        except Exception:
            log.exception("email.smtp_crashed")
            return "451 4.3.0 Temporary failure, please try again later"
        return f"250 2.0.0 OK queued as {seq}"


class Authenticator:
    """AUTH PLAIN/LOGIN against ``auth_users`` (constant-time compare)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = {u.encode(): p.encode() for u, p in users.items()}

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        expected = self.users.get(bytes(data.login))
        given = bytes(data.password)
        # Compare even for unknown users so timing does not tell which users exist.
        ok = hmac.compare_digest(expected or b"\0" * 32, given) and expected is not None
        return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


def tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    if not (settings.tls_cert and settings.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


class SmtpServer:
    def __init__(self, settings: EmailSettings, handler: EmailHandler) -> None:
        self.settings = settings
        self.handler = handler
        self.server: asyncio.base_events.Server | None = None
        self.address: tuple[str, int] | None = None
        self._tls: ssl.SSLContext | None = None
        self.sessions = Sessions(settings.max_smtp_sessions)

    def _factory(self) -> SMTP:
        s = self.settings
        users = dict(s.auth_users)
        smtp = _RelaydeskSMTP(
            self.handler,
            data_size_limit=s.max_body_bytes,
            enable_SMTPUTF8=True,
            hostname=s.smtp_hostname or socket.gethostname(),
            ident="Relaydesk ESMTP",
            tls_context=self._tls,
            require_starttls=s.require_tls,
            timeout=s.smtp_timeout,
            auth_required=s.auth_required,
            auth_require_tls=s.auth_require_tls,
            authenticator=Authenticator(users) if users else None,
            loop=asyncio.get_running_loop(),
        )
        smtp.sessions = self.sessions
        return smtp

    async def start(self) -> tuple[str, int]:
        s = self.settings
        self._tls = tls_context(s)
        if s.auth_required and not s.auth_users:
            raise ValueError("[connectors.email] auth_required needs auth_users")
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._factory, host=s.smtp_host, port=s.smtp_port)
        sock = self.server.sockets[0].getsockname()
        self.address = (str(sock[0]), int(sock[1]))
        return self.address

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), 5.0)
        self.server = None
