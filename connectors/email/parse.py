"""One RFC 5322 message → one ``InboundMessage`` plus its attachment bodies. Pure (no I/O)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr

import structlog

from connectors.sdk import Malformed
from connectors.sdk.signatures import secret_list
from events.model import InboundMessage

from . import bounds, threads
from .authresults import ForgedSender, dmarc_verdict
from .automatic import DeliveryReport, bounced_message_id, classify_auto, delivery_report
from .body import AttachmentBody, attachment_bodies, body_text
from .calendar import invitation_text
from .charsets import clean_text, decode_words, utf8_header_section
from .filenames import raw_header
from .headers import header_value, raw_text, text_header
from .lenient import forgiven
from .mime_repair import mend_multiparts
from .quotes import latest_reply
from .settings import EmailSettings

log = structlog.get_logger(__name__)


PROVIDER = "email"
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+\.?[^\s@<>()\[\],;:\"]*$")
_ID_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
# RFC 6532: header fields may carry raw UTF-8. (Python's parser still hands 8-bit header bytes
# over as surrogate escapes whatever the policy: ``charsets.clean_text`` resolves them.) Bounded:
# the header registry sees at most 4 KiB of a field (``bounds``).
POLICY = bounds.POLICY
MAX_CC = 20


@dataclass(frozen=True)
class ParsedEmail:
    message: InboundMessage
    attachments: tuple[AttachmentBody, ...]
    # For a bounce: its machine-readable report, when it has one (message/delivery-status).
    report: DeliveryReport | None = None


def is_address(value: str) -> bool:
    return bool(_ADDRESS.match(value.strip()))


def parse_email(
    raw: bytes,
    *,
    recipients: Sequence[str],
    settings: EmailSettings,
    received_at: datetime,
    source: str,
    mail_from: str | None = None,
) -> ParsedEmail:
    """Parse ``raw``. ``recipients``: the accepted envelope recipients (SMTP) or the addresses
    this mailbox receives for (IMAP/HTTP), first one first; ``mail_from``: the envelope sender
    when known. Raises ``Malformed`` when the message has no usable sender."""
    if not raw.strip():
        raise Malformed("empty message")
    if bounds.mime_parts_over(raw):
        raise Malformed(f"more than {bounds.MAX_MIME_PARTS} MIME parts: not parsed")
    msg = email.message_from_bytes(utf8_header_section(raw), policy=POLICY)
    if not isinstance(msg, EmailMessage) or not msg.keys():
        raise Malformed("not an RFC 5322 message (no header fields)")

    sender, sender_name = _sender(msg, mail_from)
    metadata: dict[str, str] = {"source": source}
    # Before anything reads the body: a multipart the parser could not split is split again.
    resplit, unsplit = mend_multiparts(msg)

    # Threading fields as sent (read linearly; the header registry would cut a long References).
    message_ids = threads.msgids(raw_text(msg, "Message-ID"))
    if message_ids:
        provider_message_id = _ID_UNSAFE.sub("", message_ids[0])[:250]
        metadata["message_id"] = f"<{provider_message_id}>"
    else:
        # No Message-ID: the same bytes retried are still one event.
        provider_message_id = "sha256:" + hashlib.sha256(raw).hexdigest()[:40]

    subject = text_header(msg, "Subject")[:500]
    if subject:
        metadata["subject"] = subject
    if date := header_value(msg, "Date"):
        metadata["date"] = date[:100]
    if locale := content_language(msg):
        metadata["locale"] = locale  # intake's "provider" prior for a short message

    # -- recipient and threading --------------------------------------------------------
    recipient = ""
    if recipients:
        first = threads.split_address(recipients[0])
        recipient = first.base
        metadata["recipients"] = ",".join(threads.split_address(r).base for r in recipients[:20])
    extra = secret_list(settings.extra_thread_token_secrets)  # tokens made before a rotation
    for rcpt in recipients:
        token = threads.split_address(rcpt).token
        if token and (conversation := threads.read_token(token, settings.thread_token_secret, extra)):
            metadata["thread_token"] = conversation
            break
    tag = threads.subject_token(subject)
    if tag and (conversation := threads.read_token(tag, settings.thread_token_secret, extra)):
        metadata["subject_tag"] = conversation

    in_reply_to = threads.msgids(raw_text(msg, "In-Reply-To"))
    references = threads.msgids(raw_text(msg, "References"))[-threads.MAX_REFERENCES :]
    if in_reply_to:
        metadata["in_reply_to"] = threads.bracket(in_reply_to[:1])
    if references:
        metadata["references"] = threads.bracket(references)
    thread_ref = in_reply_to[0] if in_reply_to else (references[-1] if references else None)

    # -- automatic mail -------------------------------------------------------------------
    auto = classify_auto(msg, mail_from, sender)
    report: DeliveryReport | None = None
    if auto is not None:
        metadata["auto"], metadata["auto_reason"] = auto
        if auto[0] == "bounce" and (original := bounced_message_id(msg)):
            metadata["bounced_message_id"] = f"<{original}>"
            thread_ref = original
        if auto[0] == "bounce":
            report = delivery_report(msg)

    # -- body -------------------------------------------------------------------------------
    text, html_only, html_cut = body_text(msg, unsplit)
    if html_only:
        metadata["html_only"] = "true"
    if unsplit or resplit:
        # "raw": a multipart with no delimiter we could find, its body as sent is in the text;
        # "resplit": split on the delimiter its body uses instead of the one its header names.
        metadata["mime_defect"] = "raw" if unsplit else "resplit"
    if not text.strip() and (invite := invitation_text(msg)):
        text = invite
    if len(text) > settings.max_text_chars or html_cut:
        text = text[: settings.max_text_chars]
        metadata["truncated"] = "true"
    # Only a reply quotes our thread: a new mail's "wrote:" or forwarded block is the
    # customer's evidence (an invoice forwarded below one line), not history to drop.
    replying = bool(thread_ref or "thread_token" in metadata or "subject_tag" in metadata)
    if settings.strip_quotes and text and auto is None and replying:
        latest = latest_reply(text, settings.quote_languages)
        if latest and latest.strip() != text.strip():
            text = latest.strip()
            metadata["quote_stripped"] = "true"

    attachments = attachment_bodies(msg, settings)
    if len(attachments) > settings.max_attachments:
        metadata["attachments_dropped"] = str(len(attachments) - settings.max_attachments)
        attachments = attachments[: settings.max_attachments]

    verified = True
    if settings.trusted_authserv_id:
        if sum(1 for key in msg if key.lower() == "from") > 1:
            # RFC 5322 allows one; a server may judge one and this parser file the other
            # (DMARC, RFC 7489 6.6.1: such mail is not to be trusted).
            raise ForgedSender("the mail has more than one From field: which one sent it is not known")
        verdict = dmarc_verdict(msg, settings.trusted_authserv_id, sender.rpartition("@")[2])
        metadata["dmarc"] = verdict
        if verdict == "fail":
            # Its From is not the sender's: filed, it would be that customer's (parked instead).
            raise ForgedSender(f"DMARC failed at {settings.trusted_authserv_id}: the From address is forged")
        verified = verdict == "pass"
    if verified and (cc := _copied(msg, sender, settings.domain_set())):
        metadata["cc"] = ",".join(cc)

    message = InboundMessage(
        at=received_at,
        channel="email",
        provider=PROVIDER,
        provider_message_id=clean_text(provider_message_id),
        sender=sender,
        recipient=recipient,
        text=clean_text(text),
        sender_name=sender_name,
        attachments=tuple(a.meta for a in attachments),
        thread_ref=clean_text(thread_ref) if thread_ref else None,
        # Every string from here on is text the codec can encode (no surrogate escapes).
        metadata={key: clean_text(value) for key, value in metadata.items()},
    )
    return ParsedEmail(message, tuple(attachments), report)


def header_recipients(raw: bytes) -> list[str]:
    """Addresses a delivered message names as its recipients, most specific first
    (Delivered-To, X-Original-To, Envelope-To, To, Cc) — for mail read from a mailbox."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out: list[str] = []
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Cc"):
        for _, address in getaddresses([str(v) for v in msg.get_all(name, [])]):
            address = address.strip()
            if address and is_address(address) and address.lower() not in {a.lower() for a in out}:
                out.append(address)
    return out


# -- pieces --------------------------------------------------------------------------------


# RFC 3282 Content-Language: a list of BCP 47 tags ("de-DE, en"); the first is kept.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


def content_language(msg: EmailMessage) -> str | None:
    """The first tag of ``Content-Language`` (the message's, else its plain-text body's); ``None``
    when absent or not a language tag of at most 35 characters."""
    header = header_value(msg, "Content-Language")
    if not header:
        body = msg.get_body(preferencelist=("plain", "html"))
        header = header_value(body, "Content-Language") if isinstance(body, EmailMessage) and body is not msg else ""
    first = header.split(",")[0].strip()
    return first if len(first) <= 35 and _LANGUAGE_TAG.fullmatch(first) else None


def _copied(msg: EmailMessage, sender: str, ours: frozenset[str]) -> list[str]:
    """The other people on the thread: To and Cc addresses beyond the sender and our own
    domains (a reply to all copies them), at most ``MAX_CC``. Only the first To and Cc
    fields, read as sent."""
    out: list[str] = []
    seen = {sender.lower()}
    for name in ("To", "Cc"):
        for _, address in getaddresses([clean_text(raw_header(msg, name) or "")]):  # as sent: linear
            address = address.strip()
            domain = address.rpartition("@")[2].lower()
            if not is_address(address) or domain in ours or address.lower() in seen:
                continue
            seen.add(address.lower())
            out.append(address)
    return out[:MAX_CC]


def _sender(msg: EmailMessage, mail_from: str | None) -> tuple[str, str | None]:
    name, address = "", ""
    try:
        header = msg["From"]
        addresses = getattr(header, "addresses", ()) if header is not None else ()
        if addresses:
            first = addresses[0]
            name, address = first.display_name, first.addr_spec
    except Exception as err:  # read again below from the raw header
        forgiven("from", err)
    name, address = clean_text(name or ""), clean_text(address or "")
    if not address:
        # Not read again as sent when over the registry's bound: another parser could read
        # another address than the receiving server checked (the envelope sender is used).
        name, address = parseaddr(header_value(msg, "From"))
    raw = raw_header(msg, "From") or ""
    if "=?" in raw:
        # The display name's encoded words read under their labels as a body is. Parsed first,
        # decoded after: a decoded name can never make or change an address.
        pairs = getaddresses([raw])
        if pairs and pairs[0][1] and clean_text(pairs[0][1]).lower() == address.lower():
            name = clean_text(decode_words(pairs[0][0]))
    if not address or not is_address(address):
        if mail_from and is_address(mail_from):
            address = mail_from
        else:
            raise Malformed("no valid From address")
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}", (name.strip() or None)
