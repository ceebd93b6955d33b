"""Replies by SMTP: build the message threaded under the customer's, send it with smtplib.

What ``DeliverReply`` carries (the API fills it from the conversation's last inbound
``MessageReceived``: ``thread_ref = provider_message_id``, ``metadata = its metadata``, which
intake copies from ``InboundMessage.metadata``):
  * ``contact``: the customer's address (To);
  * ``thread_ref``: the customer's Message-ID (bare or in brackets) → In-Reply-To
    (a synthetic ``sha256:…`` id, for mail that had none, is ignored);
  * ``metadata["references"]``: that message's References → References = these + parent;
  * ``metadata["subject"]``: its Subject → "Re: <subject>" (one Re:);
  * ``metadata["from"]``, else the first of ``metadata["recipients"]``: the address the
    customer wrote to (billing@…), used as From when its domain is one of ``domains``;
    otherwise ``from_address``;
  * ``metadata["cc"]``: the other people on the customer's mail (its To and Cc beyond our
    own domains and the customer): with ``reply_all`` (the default) they are copied (Cc),
    as a mail client's "Reply all" does. A copy refused by the receiving server does not
    fail the reply; the customer's address refused does.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import formataddr, formatdate

import idna

from connectors.sdk import DeliveryResult
from events.model import Attachment, DeliverReply

from . import threads
from .parse import is_address
from .settings import EmailSettings

_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class OutgoingMail:
    message: EmailMessage
    message_id: str  # bare
    envelope_from: str
    to: str
    cc: tuple[str, ...] = ()
    # The reply's files (signed links to the API): downloaded and attached by ``send``.
    files: tuple[Attachment, ...] = ()


def from_address(reply: DeliverReply, settings: EmailSettings) -> str:
    wanted = (reply.metadata.get("from") or reply.metadata.get("recipients", "").split(",")[0]).strip()
    if wanted and is_address(wanted) and threads.split_address(wanted).domain in settings.domain_set():
        return threads.split_address(wanted).base
    return settings.from_address


def deliverable(address: str) -> str:
    """``address`` as any mail server takes it: an internationalised domain as its A-label
    (``ann@bücher.de`` → ``ann@xn--bcher-kva.de``) when the local part is ASCII. Found by an
    audit: a reply to a customer of an IDN domain failed outright ("the server does not
    advertise the required SMTPUTF8 capability") on a relay without SMTPUTF8, though the
    A-label form reaches the same mailbox everywhere. A non-ASCII local part needs SMTPUTF8
    whatever is done, and a domain IDNA refuses is left as written."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii() or not local.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True, transitional=False).decode('ascii')}"
    except (idna.IDNAError, UnicodeError):
        return address


def build_reply(reply: DeliverReply, settings: EmailSettings) -> OutgoingMail:
    """The reply as a MIME message. Raises ValueError when it cannot be addressed."""
    to = deliverable(reply.contact.strip())
    if not is_address(to):
        raise ValueError("contact is not an email address")
    sender = from_address(reply, settings)
    if not sender or not is_address(sender):
        raise ValueError("no from_address configured")
    domain = settings.message_id_domain or threads.split_address(sender).domain
    # One id per reply: a retry after an ambiguous failure sends the same Message-ID, which
    # mail clients and servers collapse, and MessageSent names exactly what was sent.
    message_id = f"rd.{_SAFE_ID.sub('', reply.reply_id)[:100]}@{domain}"
    token = threads.make_token(reply.conversation_id, settings.thread_token_secret)

    msg = EmailMessage()
    msg["From"] = formataddr((settings.from_name, sender)) if settings.from_name else sender
    msg["To"] = to
    subject = " ".join(reply.metadata.get("subject", "").split())  # one line, whatever was stored
    parent = reply.thread_ref if reply.thread_ref and not reply.thread_ref.startswith("sha256:") else None
    # "Re:" only on an answer to the customer's mail: an agent's first message is not one.
    tag = token if settings.subject_tag else ""
    replying = bool(reply.thread_ref)
    msg["Subject"] = threads.reply_subject(subject, settings.default_subject, tag, replying=replying)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = f"<{message_id}>"
    in_reply_to, references = threads.reply_references(parent, reply.metadata.get("references"))
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    if settings.reply_to_token:
        local, _, dom = threads.plus_address(sender, token).rpartition("@")
        msg["Reply-To"] = HeaderAddress(settings.from_name, local, dom)
    cc = copied(reply, settings, customer=to, sender=sender)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg.set_content(reply.text)
    return OutgoingMail(msg, message_id, settings.bounce_address or sender, to, cc, reply.attachments)


def copied(reply: DeliverReply, settings: EmailSettings, *, customer: str, sender: str) -> tuple[str, ...]:
    """Who a reply to all copies: ``metadata["cc"]`` minus the customer, us and our domains."""
    if not settings.reply_all:
        return ()
    ours = settings.domain_set()
    skip = {customer.lower(), sender.lower()}
    out: list[str] = []
    for address in reply.metadata.get("cc", "").split(","):
        address = deliverable(address.strip())
        if not address or not is_address(address) or address.lower() in skip:
            continue
        if threads.split_address(address).domain in ours:
            continue
        skip.add(address.lower())
        out.append(address)
    return tuple(out)


def send(mail: OutgoingMail, settings: EmailSettings) -> DeliveryResult:
    """Blocking SMTP submission (run it in a thread). 4xx and connection trouble are
    retryable; 5xx is not."""
    s = settings
    timeout = s.deliver_timeout
    if mail.files and (problem := attach_files(mail.message, mail.files, timeout)):
        return DeliveryResult.failed(problem, retryable=True)  # the API may be back in a moment
    context = ssl.create_default_context()
    try:
        client: smtplib.SMTP
        if s.send_ssl:
            client = smtplib.SMTP_SSL(s.send_host, s.send_port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(s.send_host, s.send_port, timeout=timeout)
        with client:
            client.ehlo()
            if not s.send_ssl and s.send_starttls and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            elif s.send_user and not s.send_ssl:
                # Never send a password in clear.
                return DeliveryResult.failed("smtp server does not offer STARTTLS; refusing to log in in clear")
            if s.send_user:
                client.login(s.send_user, s.send_password)
            refused = client.send_message(mail.message, from_addr=mail.envelope_from, to_addrs=[mail.to, *mail.cc])
            if mail.to in refused:  # a copy refused (others were accepted) is not a failed reply
                code = refused[mail.to][0]
                return DeliveryResult.failed(f"smtp {code}: recipient refused", retryable=400 <= code < 500)
    except smtplib.SMTPRecipientsRefused as err:
        code = next(iter(err.recipients.values()))[0] if err.recipients else 550
        return DeliveryResult.failed(f"smtp {code}: recipient refused", retryable=400 <= code < 500)
    except smtplib.SMTPAuthenticationError as err:
        return DeliveryResult.failed(f"smtp {err.smtp_code}: authentication failed")
    except smtplib.SMTPResponseException as err:
        detail = err.smtp_error.decode("utf-8", "replace") if isinstance(err.smtp_error, bytes) else str(err.smtp_error)
        return DeliveryResult.failed(f"smtp {err.smtp_code}: {detail[:200]}", retryable=400 <= err.smtp_code < 500)
    except smtplib.SMTPNotSupportedError as err:
        return DeliveryResult.failed(f"smtp: {err}"[:200])
    except (smtplib.SMTPException, OSError) as err:
        return DeliveryResult.failed(f"smtp server unreachable ({type(err).__name__})", retryable=True)
    return DeliveryResult.sent(mail.message_id)


MAX_FILE_BYTES = 25 * 1024 * 1024


def attach_files(message: EmailMessage, files: tuple[Attachment, ...], timeout: float) -> str | None:
    """Download each file from its signed link and attach it as a MIME part (blocking: runs
    in ``send``'s thread). Returns why not, or None. Idempotent: a retry attaches afresh."""
    import urllib.request

    if any(part.get_content_disposition() == "attachment" for part in message.iter_attachments()):
        return None  # attached by an earlier try of the same mail
    for file in files:
        if not file.url or not file.url.startswith(("https://", "http://")):
            return f"attachment {file.name or '?'} has no link to download"
        try:
            with urllib.request.urlopen(file.url, timeout=timeout) as answer:  # http(s) only, checked above
                data = answer.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            return f"attachment {file.name or '?'} could not be downloaded ({type(err).__name__})"
        if len(data) > MAX_FILE_BYTES:
            return f"attachment {file.name or '?'} is larger than {MAX_FILE_BYTES} bytes"
        maintype, _, subtype = (file.content_type or "application/octet-stream").partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=file.name or "file")
    return None
