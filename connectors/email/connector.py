"""The email connector: ``relaydesk connector email``.

Inbound, three doors, one pipeline (parse → attachments to the object store → publish on
``rd.inbound.email`` with ``Nats-Msg-Id: email:<Message-ID>`` → success only after the ack):
  * SMTP on ``smtp_host:smtp_port`` (127.0.0.1:2525), aiosmtpd; STARTTLS/AUTH configurable;
  * an IMAP poller for mailboxes that live elsewhere (Gmail/Workspace, Exchange), when
    ``imap_host`` is set;
  * ``POST /email/inbound`` on the HTTP port: the raw message as the body, signed with
    ``X-Relaydesk-Signature: sha256=<hex HMAC-SHA256(http_secret, body)>``; envelope
    recipients in ``X-Envelope-To`` (comma-separated; else taken from the headers).
Outbound: ``DeliverReply`` on ``rd.out.email`` is sent by SMTP (``send_*`` settings),
threaded under the customer's message (see ``outbound.py`` for what the reply must carry).
A bounce of one of our replies is reported as that reply's outcome (``bounced``) instead of
being published as a customer message; intake records ``DeliveryFailed`` on the reply's
conversation (``bounces.py``, ``returning.py``); a bounce of a Cc'd copy only is logged and
counted. Our own mail come back (a journalled or forwarding mailbox, an agent notice) is never
published (``returning.own_mail``). The connector never writes the log.

Settings: ``connectors/email/settings.py`` (``[connectors.email]``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import structlog
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore

from connectors.sdk import (
    Connector,
    ConnectorSettings,
    DeliveryResult,
    Malformed,
    ProviderRequest,
    Route,
    Unauthentic,
    Unavailable,
)
from connectors.sdk.metrics import Metrics
from connectors.sdk.publish import InboundPublisher, Published
from events import subjects
from events.codec import encode
from events.model import Channel, DeliverReply, InboundMessage
from events.skips import count_skip
from events.stream_setup import SETUP_BUDGET_S, ensure_store, patiently
from events.stream_specs import objects_spec
from events.streams import attachments_store, retention_max_age

from . import outbound
from .authresults import ForgedSender
from .body import AttachmentBody
from .bounces import SentReplies
from .imap import ImapPoller
from .parse import ParsedEmail, header_recipients, is_address, parse_email
from .parsing_pool import ParsingPool
from .returning import Dropped, bounce_of_ours, own_mail
from .settings import EmailSettings
from .smtp_server import EmailHandler, SmtpServer
from .unparsed import park_too_large, park_unparsed

log = structlog.get_logger("relaydesk.connector.email")

SIGNATURE_HEADER = "X-Relaydesk-Signature"
ENVELOPE_TO_HEADER = "X-Envelope-To"
ENVELOPE_FROM_HEADER = "X-Envelope-From"
INBOUND_PATH = "/email/inbound"


def fingerprint(value: str) -> str:
    return "h:" + hashlib.sha256(value.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Parked:
    """A mail that could not be parsed, kept raw and parked (``unparsed.py``): accepted."""

    key: str


def sign(secret: str, body: bytes) -> str:
    """The ``X-Relaydesk-Signature`` value for ``body`` (for MTAs/relays posting raw mail)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class EmailConnector(Connector):
    name: ClassVar[str] = "email"
    channel: ClassVar[Channel] = "email"
    provider: ClassVar[str] = "email"
    Settings: ClassVar[type[ConnectorSettings]] = EmailSettings
    inbound_paths: ClassVar[tuple[str, ...]] = ()

    settings: EmailSettings

    def __init__(self, settings: ConnectorSettings) -> None:
        if not isinstance(settings, EmailSettings):
            raise TypeError("EmailConnector needs EmailSettings")
        super().__init__(settings)
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.publisher: InboundPublisher | None = None
        self.metrics: Metrics = Metrics(self.name, self.channel)
        self.smtp: SmtpServer | None = None
        self.imap: ImapPoller | None = None
        self._objects: ObjectStore | None = None
        # Inbound mail is parsed in threads of its own: a flood of it never queues the replies'
        # sends and IMAP behind it in asyncio's default executor (parsing_pool.py).
        self.parsing = ParsingPool()
        self.sent: SentReplies | None = None
        self.smtp_address: tuple[str, int] | None = None

    # -- wiring -------------------------------------------------------------------------------

    def attach(self, nc: NATS, publisher: InboundPublisher | None = None, metrics: Metrics | None = None) -> None:
        """Give the connector the NATS connection (and the runtime's publisher and metrics).
        The ``ConnectorRuntime`` calls it before ``startup``; call it yourself only to run the
        connector some other way."""
        self.nc = nc
        self.js = nc.jetstream()
        self.publisher = publisher or InboundPublisher(nc, ack_timeout=self.settings.ack_timeout)
        self.sent = SentReplies(self.js, timeout=self.settings.ack_timeout)
        if metrics is not None:
            self.metrics = metrics

    async def startup(self) -> None:
        if self.publisher is None:
            raise RuntimeError("email connector: no NATS connection (run it in a ConnectorRuntime or attach())")
        s = self.settings
        if not s.domain_set():
            log.warning("email.no_domains", hint="set [connectors.email] domains; every recipient gets 550")
        try:
            await self._object_store(budget=SETUP_BUDGET_S)
        except Exception as err:  # NATS may come later: attachments then wait for it (451)
            log.warning("email.object_store_unavailable", error=type(err).__name__)
        if s.smtp_enabled:
            self.smtp = SmtpServer(s, EmailHandler(s, self._ingest_smtp, self.metrics.reject))
            try:
                self.smtp_address = await self.smtp.start()
            except OSError as err:
                self.smtp = None
                raise SystemExit(
                    f"connector email cannot listen for SMTP on {s.smtp_host}:{s.smtp_port}: {err.strerror}"
                ) from err
            log.info("email.smtp_listening", host=self.smtp_address[0], port=self.smtp_address[1])
        if s.imap_host:
            assert self.js is not None
            kv = await self.js.key_value(subjects.STATE_BUCKET)
            self.imap = ImapPoller(s, kv, self._ingest_imap, self._park_too_large_imap)
            self.imap.start()

    async def shutdown(self) -> None:
        self.parsing.close()
        if self.smtp is not None:
            await self.smtp.stop()
            self.smtp = None
        if self.imap is not None:
            await self.imap.stop()
            self.imap = None

    # -- the pipeline ---------------------------------------------------------------------------

    async def _object_store(self, budget: float = 0.0) -> ObjectStore:
        if self._objects is not None:
            return self._objects
        if self.js is None:
            raise Unavailable("not connected")
        js, bucket = self.js, self.settings.attachment_bucket
        # Created with the replicas relaydesk passes ([nats] replicas), config from events.streams.
        # Kept as long as the messages' text ([retention] message_days, which relaydesk passes).
        config = attachments_store(
            self.settings.replicas, bucket, max_age=retention_max_age(self.settings.message_days)
        )
        spec = objects_spec(config, owner="connector email", required=False)

        async def open_store() -> ObjectStore:
            await ensure_store(js, spec)
            return await js.object_store(bucket)

        self._objects = await patiently(open_store, what=f"object store {bucket}", budget=budget)
        return self._objects

    async def store_attachments(self, attachments: Sequence[AttachmentBody]) -> None:
        """Bodies into the object store under their sha256 (a retry stores nothing twice)."""
        if not attachments:
            return
        try:
            async with asyncio.timeout(self.settings.ack_timeout * 4):
                store = await self._object_store()
                for item in attachments:
                    name = item.meta.sha256 or hashlib.sha256(item.data).hexdigest()
                    try:
                        info = await store.get_info(name)
                        if not info.deleted:
                            continue
                    except ObjectNotFoundError:
                        pass
                    await store.put(name, item.data)
        except Unavailable:
            raise
        except Exception as err:
            raise Unavailable(f"attachments not stored: {type(err).__name__}") from err

    async def ingest(
        self, raw: bytes, *, recipients: Sequence[str], source: str, mail_from: str | None = None
    ) -> Published | Parked | Dropped:
        """Parse, store attachments, publish; returns once JetStream acknowledged. A mail that
        cannot be parsed is stored raw and parked (``Parked``): it is never refused for its
        content. Our own mail come back, and the bounce of a reply's Cc'd copy, are accepted
        and not published (``Dropped``). Raises ``Unavailable`` (retry later) only: NATS did
        not answer."""
        if self.publisher is None:
            raise Unavailable("email connector not started")
        try:
            # In a thread: a hostile mail costs seconds of parsing even within bounds
            # (connectors.email.bounds), and on the event loop it held every other SMTP
            # session, the health checks and the replies going out meanwhile.
            parsed: ParsedEmail = await self.parsing.run(
                parse_email, raw, recipients=recipients, settings=self.settings, received_at=self.now(),
                source=source, mail_from=mail_from,
            )  # fmt: skip
            encode(parsed.message)  # what the bus will be given must encode: else it is parked now
        except Exception as err:  # Malformed, or a mail no code path foresaw: kept, not refused
            return await self._park(raw, source, err)
        recorded = await bounce_of_ours(
            parsed, raw, replies=self.sent, publisher=self.publisher, metrics=self.metrics,
            timeout=self.settings.ack_timeout * 4, now=self.now,
        )  # fmt: skip
        if recorded is not None:
            return recorded
        if (why := own_mail(parsed, raw, self.settings)) is not None:
            # Accepted (refused, it would bounce to our own address: one more turn of the loop).
            self.metrics.reject("own_mail")
            log.info(
                "inbound.own_mail_dropped",
                source=source,
                rule=why,
                message_ref=fingerprint(parsed.message.provider_message_id),
            )
            return Dropped("own_mail")
        await self.store_attachments(parsed.attachments)
        self.metrics.inc("received")
        [item] = await self.publisher.publish([parsed.message])
        self.metrics.inc("duplicates" if item.duplicate else "published")
        # Per message: debug (the counters carry the totals), as in every connector.
        log.debug(
            "inbound.duplicate" if item.duplicate else "inbound.published",
            source=source,
            # Message-IDs often embed an address or a host name: a fingerprint correlates as well.
            message_ref=fingerprint(parsed.message.provider_message_id),
            seq=item.seq,
            auto=parsed.message.metadata.get("auto"),
            attachments=len(parsed.attachments),
        )
        return item

    async def _park(self, raw: bytes, source: str, err: Exception) -> Parked:
        reason = err.reason if isinstance(err, Malformed) else f"{type(err).__name__}: {err}"
        why = "forged_sender" if isinstance(err, ForgedSender) else "unparseable"
        self.metrics.reject(why)
        if self.js is None:
            raise Unavailable("email connector not started")
        key = await park_unparsed(
            self.js, self._object_store, raw=raw, source=source, error=reason,
            bucket=self.settings.attachment_bucket, timeout=self.settings.ack_timeout * 4,
            logged_as=f"email.{why}_parked",
        )  # fmt: skip
        return Parked(key)

    async def _ingest_smtp(self, raw: bytes, recipients: list[str], mail_from: str) -> str:
        try:
            item = await self.ingest(raw, recipients=recipients, source="smtp", mail_from=mail_from)
        except Unavailable:
            self.metrics.inc("unavailable")
            raise
        return item.key if isinstance(item, Parked | Dropped) else str(item.seq)

    def mailbox_recipients(self, raw: bytes) -> list[str]:
        domains = self.settings.domain_set()
        ours = [a for a in header_recipients(raw) if a.rpartition("@")[2].lower() in domains]
        if ours:
            return ours
        fallback = self.settings.imap_recipient or self.settings.imap_user
        return [fallback] if is_address(fallback) else []

    async def _ingest_imap(self, raw: bytes) -> str:
        item = await self.ingest(raw, recipients=self.mailbox_recipients(raw), source="imap")
        return "parked" if isinstance(item, Parked) else "dropped" if isinstance(item, Dropped) else "published"

    async def _park_too_large_imap(self, head: bytes, size: int, uid: int) -> str:
        """A mailbox's mail over ``max_body_bytes`` (SMTP refuses it 552): parked with its first
        64 KiB for an operator, counted as a rejection ``too_large``, as SMTP counts it."""
        if self.js is None:
            raise Unavailable("email connector not started")
        key = await park_too_large(
            self.js, head=head, size=size, limit=self.settings.max_body_bytes, source="imap",
            timeout=self.settings.ack_timeout * 4,
            headers={"Relaydesk-Imap-Uid": str(uid), "Relaydesk-Imap-Mailbox": self.settings.imap_mailbox},
        )  # fmt: skip
        self.metrics.reject("too_large")
        return key

    # -- HTTP: raw MIME posted by an MTA or relay ----------------------------------------------

    def routes(self) -> list[Route]:
        return [Route("POST", INBOUND_PATH, handler=self._on_http)]

    def verify(self, request: ProviderRequest) -> None:
        secret = self.settings.http_secret
        if not secret:
            raise Unauthentic("raw MIME inbound is not configured (http_secret)")
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not given or not hmac.compare_digest(given.encode(), sign(secret, request.body).encode()):
            raise Unauthentic(f"missing or wrong {SIGNATURE_HEADER}")

    def _http_recipients(self, request: ProviderRequest) -> list[str]:
        domains = self.settings.domain_set()
        header = request.headers.get(ENVELOPE_TO_HEADER, "")
        named = [a.strip() for a in header.split(",") if a.strip()] if header else header_recipients(request.body)
        ours = [a for a in named if is_address(a) and a.rpartition("@")[2].lower() in domains]
        if not ours:
            raise Malformed("no recipient in a domain handled here")
        return ours

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        """The message in a raw-MIME request (attachment bodies are not stored here)."""
        parsed = parse_email(
            request.body, recipients=self._http_recipients(request), settings=self.settings,
            received_at=self.now(), source="http", mail_from=request.headers.get(ENVELOPE_FROM_HEADER),
        )  # fmt: skip
        return [parsed.message]

    async def _on_http(self, request: ProviderRequest) -> web.StreamResponse:
        item = await self.ingest(
            request.body,
            recipients=self._http_recipients(request),
            source="http",
            mail_from=request.headers.get(ENVELOPE_FROM_HEADER),
        )
        if isinstance(item, Parked):
            return web.json_response({"accepted": 0, "parked": item.key})
        if isinstance(item, Dropped):
            return web.json_response({"accepted": 0, "dropped": item.why})
        return web.json_response({"accepted": 1, "duplicate": item.duplicate})

    # -- outbound -------------------------------------------------------------------------------

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        s = self.settings
        if not s.send_host:
            return DeliveryResult.failed("email connector: send_host is not configured")
        try:
            mail = outbound.build_reply(reply, s)
        except ValueError as err:
            return DeliveryResult.failed(f"email connector: {err}")
        result = await asyncio.to_thread(outbound.send, mail, s)
        if result.ok:
            await self._remember_sent(reply, mail.message_id, mail.to)
        return result

    async def _remember_sent(self, reply: DeliverReply, message_id: str, to: str) -> None:
        """Keep reply → conversation for its bounce. Best effort: the mail is gone, and a
        failure here must not turn a sent reply into a failed one (its bounce, should one
        come, is then published as an unmatched bounce, as before)."""
        if self.sent is None:
            return
        for attempt in range(3):
            try:
                await self.sent.remember(reply, message_id, self.now(), to=to)
                return
            except Exception as err:
                if attempt == 2:
                    log.warning("outbound.sent_not_remembered", reply_id=reply.reply_id, error=type(err).__name__)
                    count_skip("email.sent_not_remembered")
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
