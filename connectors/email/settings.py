"""``[connectors.email]``: every key with its default (env: ``RELAYDESK_CONNECTOR_EMAIL_<KEY>``)."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Literal

import msgspec

from connectors.sdk import ConnectorSettings

MiB = 1024 * 1024


class EmailSettings(ConnectorSettings, kw_only=True):
    # HTTP side (health, metrics, raw-MIME inbound route POST /email/inbound).
    port: int = 8085
    # Largest message accepted, in bytes: SMTP answers 552 5.3.4 above it, HTTP 413.
    max_body_bytes: int = 25 * MiB

    # -- inbound SMTP ---------------------------------------------------------------------
    smtp_enabled: bool = True
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_hostname: str = ""  # name in the greeting; "" = this machine's host name
    smtp_timeout: float = 300.0  # idle seconds before a client is dropped
    # Sessions open at once; one more is answered 421 4.3.2 and closed (the sender retries).
    # Each may hold a mail of max_body_bytes in memory: 100 x 25 MiB bounds it to ~2.5 GiB.
    max_smtp_sessions: int = 100
    # Recipient domains accepted (case-insensitive); any other recipient gets 550 5.1.1.
    # A comma-separated string is accepted too (from the environment).
    domains: list[str] | str = msgspec.field(default_factory=lambda: ["localhost"])
    max_recipients: int = 50
    # STARTTLS is offered when both paths are set; require_tls refuses MAIL before it.
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False
    # AUTH PLAIN/LOGIN is offered when users are set ({"user": "password"});
    # auth_required refuses MAIL before AUTH; auth_require_tls offers AUTH only after STARTTLS.
    auth_users: dict[str, str] = {}
    auth_required: bool = False
    auth_require_tls: bool = True

    # -- raw MIME over HTTP (an MTA pipe or relay posting the message) --------------------
    # HMAC-SHA256 secret for X-Relaydesk-Signature: sha256=<hex of HMAC(secret, body)>;
    # "" = the route answers 403 to everything.
    http_secret: str = ""

    # -- parsing ------------------------------------------------------------------------
    strip_quotes: bool = True
    quote_languages: list[str] = msgspec.field(default_factory=lambda: ["en", "de", "fr", "es", "it", "nl"])
    max_text_chars: int = 100_000  # longer bodies are cut (metadata truncated=true)
    max_attachments: int = 50
    attachment_bucket: str = "rd_attachments"  # JetStream object store, created if missing

    # -- threading ----------------------------------------------------------------------
    # Signs plus-address tokens and subject tags (support+cv_x.<sig>@…); "" = unsigned.
    thread_token_secret: str = ""
    # Also accepted, never used to sign (a list or comma-separated, so an env variable or secret
    # file sets it): the old secret after a rotation, so replies to mail sent before still thread.
    extra_thread_token_secrets: list[str] | str = []
    reply_to_token: bool = True  # replies carry Reply-To: <local>+<token>@<domain>
    subject_tag: bool = False  # replies carry "[#<token>]" in the subject

    # -- IMAP poller (off unless imap_host is set) ------------------------------------------
    imap_host: str = ""
    imap_port: int = 993
    imap_ssl: bool = True
    imap_starttls: bool = False
    imap_user: str = ""
    imap_password: str = ""
    imap_mailbox: str = "INBOX"
    imap_poll_interval: float = 60.0
    imap_idle: bool = True  # wait with IDLE between polls where the server offers it
    imap_timeout: float = 30.0
    # First start on a mailbox: "new" = only mail arriving from now on, "all" = everything in it.
    imap_start: Literal["new", "all"] = "new"
    # The address this mailbox receives for, when the headers do not name one of `domains`.
    imap_recipient: str = ""

    # -- outbound SMTP (replies) --------------------------------------------------------------
    send_host: str = ""
    send_port: int = 587
    send_user: str = ""
    send_password: str = ""
    send_starttls: bool = True  # STARTTLS when the server offers it (required if send_user is set)
    send_ssl: bool = False  # implicit TLS (port 465)
    from_address: str = ""  # e.g. support@example.com
    from_name: str = ""
    bounce_address: str = ""  # envelope sender (MAIL FROM); "" = from_address
    message_id_domain: str = ""  # "" = the from address's domain
    default_subject: str = "Your request"
    # Replies copy (Cc) the other people the customer's mail was addressed to (its To and Cc
    # beyond our own domains), as "Reply all" does; false: the customer only.
    reply_all: bool = True
    # The authserv-id your receiving mail server stamps on its Authentication-Results field
    # (RFC 8601; e.g. "mx.example.com"; connectors/email/authresults.py). Set: a mail whose
    # DMARC check it failed is parked, not filed under the address it claims, and a reply to a
    # mail that did not pass copies nobody (reply_all needs a sender the server vouched for).
    trusted_authserv_id: str = ""
    # Other addresses Relaydesk sends from, besides from_address and bounce_address: the
    # delivery service's agent notices ([delivery] smtp_from; its default is here). Mail From
    # any of them is our own come back (a mail loop), never a customer's. A list, or a
    # comma-separated string from env.
    own_addresses: list[str] | str = msgspec.field(default_factory=lambda: ["relaydesk@localhost"])

    def domain_set(self) -> frozenset[str]:
        raw = self.domains.split(",") if isinstance(self.domains, str) else self.domains
        return frozenset(d.strip().lower().lstrip("@") for d in raw if d.strip())

    def own_senders(self) -> frozenset[str]:
        """Every address Relaydesk sends from (lower-case): mail From one is never a customer's."""
        raw = self.own_addresses.split(",") if isinstance(self.own_addresses, str) else self.own_addresses
        every = [self.from_address, self.bounce_address, *raw]
        addresses = (parseaddr(a)[1] for a in every if a.strip())
        return frozenset(a.strip().lower() for a in addresses if "@" in a)

    def own_id_domains(self) -> frozenset[str]:
        """The domains our Message-IDs (``rd.<id>@<domain>``) are made with: replies use
        ``message_id_domain`` or their From's (``from_address``, or one of ``domains``);
        agent notices their sender's."""
        senders = {a.rpartition("@")[2] for a in self.own_senders()}
        extra = {self.message_id_domain.strip().lower()} if self.message_id_domain.strip() else set()
        return frozenset(self.domain_set() | senders | extra)
