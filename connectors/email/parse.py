"""One RFC 5322 message → one ``InboundMessage`` plus its attachment bodies. Pure (no I/O)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr

import structlog

from connectors.sdk import Malformed
from events.model import Attachment, InboundMessage

from . import threads
from .calendar import invitation_text
from .charsets import clean_text, decode_bytes, decode_words, utf8_header_section
from .filenames import filename, raw_header, safe_filename
from .html import cap_html, html_to_text
from .lenient import forgiven
from .mime_repair import mend_multiparts
from .quotes import latest_reply
from .settings import EmailSettings

log = structlog.get_logger(__name__)


PROVIDER = "email"
_NULL_SENDERS = {"", "<>"}
_DAEMONS = ("mailer-daemon", "postmaster")
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+\.?[^\s@<>()\[\],;:\"]*$")
_ID_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
# RFC 6532: header fields may carry raw UTF-8. (Python's parser still hands 8-bit header bytes
# over as surrogate escapes whatever the policy: ``charsets.clean_text`` resolves them.)
POLICY = email.policy.SMTPUTF8
MAX_CC = 20
_FILE_TYPES = {"image", "audio", "video", "application"}


@dataclass(frozen=True)
class AttachmentBody:
    meta: Attachment
    data: bytes


@dataclass(frozen=True)
class DeliveryReport:
    """What a delivery-status report (RFC 3464) says about the first recipient it reports
    as failed (else the first it names): ``action`` (failed/delayed/delivered/relayed/
    expanded), ``status`` (``5.1.1``) and ``diagnostic`` (the remote server's answer)."""

    action: str
    status: str = ""
    diagnostic: str = ""

    @property
    def failed(self) -> bool:
        return self.action == "failed"


@dataclass(frozen=True)
class ParsedEmail:
    message: InboundMessage
    attachments: tuple[AttachmentBody, ...]
    # For a bounce: its machine-readable report, when it has one (message/delivery-status).
    report: DeliveryReport | None = None


def attachment_url(bucket: str, sha256: str) -> str:
    return f"nats-object://{bucket}/{sha256}"


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
    msg = email.message_from_bytes(utf8_header_section(raw), policy=POLICY)
    if not isinstance(msg, EmailMessage) or not msg.keys():
        raise Malformed("not an RFC 5322 message (no header fields)")

    sender, sender_name = _sender(msg, mail_from)
    metadata: dict[str, str] = {"source": source}
    # Before anything reads the body: a multipart the parser could not split is split again.
    resplit, unsplit = mend_multiparts(msg)

    message_ids = threads.msgids(_header(msg, "Message-ID"))
    if message_ids:
        provider_message_id = _ID_UNSAFE.sub("", message_ids[0])[:250]
        metadata["message_id"] = f"<{provider_message_id}>"
    else:
        # No Message-ID: the same bytes retried are still one event.
        provider_message_id = "sha256:" + hashlib.sha256(raw).hexdigest()[:40]

    subject = _text_header(msg, "Subject")[:500]
    if subject:
        metadata["subject"] = subject
    if date := _header(msg, "Date"):
        metadata["date"] = date[:100]
    if locale := content_language(msg):
        metadata["locale"] = locale  # intake's "provider" prior for a short message

    # -- recipient and threading --------------------------------------------------------
    recipient = ""
    if recipients:
        first = threads.split_address(recipients[0])
        recipient = first.base
        metadata["recipients"] = ",".join(threads.split_address(r).base for r in recipients[:20])
    for rcpt in recipients:
        token = threads.split_address(rcpt).token
        if token and (conversation := threads.read_token(token, settings.thread_token_secret)):
            metadata["thread_token"] = conversation
            break
    tag = threads.subject_token(subject)
    if tag and (conversation := threads.read_token(tag, settings.thread_token_secret)):
        metadata["subject_tag"] = conversation

    in_reply_to = threads.msgids(_header(msg, "In-Reply-To"))
    references = threads.msgids(_header(msg, "References"))[-threads.MAX_REFERENCES :]
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
        if auto[0] == "bounce" and (original := _bounced_message_id(msg)):
            metadata["bounced_message_id"] = f"<{original}>"
            thread_ref = original
        if auto[0] == "bounce":
            report = delivery_report(msg)

    # -- body -------------------------------------------------------------------------------
    text, html_only, html_cut = _body_text(msg, unsplit)
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

    attachments = _attachments(msg, settings)
    if len(attachments) > settings.max_attachments:
        metadata["attachments_dropped"] = str(len(attachments) - settings.max_attachments)
        attachments = attachments[: settings.max_attachments]

    if cc := _copied(msg, sender, settings.domain_set()):
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
    header = _header(msg, "Content-Language")
    if not header:
        body = msg.get_body(preferencelist=("plain", "html"))
        header = _header(body, "Content-Language") if isinstance(body, EmailMessage) and body is not msg else ""
    first = header.split(",")[0].strip()
    return first if len(first) <= 35 and _LANGUAGE_TAG.fullmatch(first) else None


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception as err:  # a header the policy cannot parse at all
        forgiven(f"header.{name.lower()}", err)
        return ""
    return clean_text(" ".join(str(value).split())) if value is not None else ""


def _text_header(msg: Message, name: str) -> str:
    """A free-text field (Subject) with its RFC 2047 words read by ``charsets.decode_words``
    (labels as in a body), not by Python's header registry (U+FFFD for a label it does not know)."""
    raw = raw_header(msg, name)
    return clean_text(" ".join(decode_words(raw).split())) if raw is not None else ""


def _copied(msg: EmailMessage, sender: str, ours: frozenset[str]) -> list[str]:
    """The other people on the thread: To and Cc addresses beyond the sender and our own
    domains (a reply to all copies them), at most ``MAX_CC``."""
    out: list[str] = []
    seen = {sender.lower()}
    for name in ("To", "Cc"):
        for _, address in getaddresses([_header(msg, name)]):
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
        name, address = parseaddr(_header(msg, "From"))
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


def classify_auto(msg: EmailMessage, mail_from: str | None, sender: str) -> tuple[str, str] | None:
    """("bounce" | "auto-reply" | "bulk", reason) for automatic mail (RFC 3834 and friends)."""
    ctype = msg.get_content_type()
    report_type = str(msg.get_param("report-type", "") or "").lower()
    if ctype == "multipart/report" and report_type == "delivery-status":
        return "bounce", "delivery-status report"
    null_sender = mail_from is not None and mail_from.strip() in _NULL_SENDERS
    return_path = _header(msg, "Return-Path")
    if return_path.replace(" ", "") == "<>":
        null_sender = True
    local = sender.rpartition("@")[0].lower()
    if null_sender and local in _DAEMONS:
        return "bounce", "null sender from mailer daemon"
    if ctype == "multipart/report":
        return "auto-reply", f"report {report_type or 'unknown'}"
    auto_submitted = _header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return "auto-reply", f"auto-submitted {auto_submitted}"[:60]
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if _header(msg, name):
            return "auto-reply", name.lower()
    precedence = _header(msg, "Precedence").lower()
    if precedence in ("bulk", "junk", "list"):
        return "bulk", f"precedence {precedence}"
    if precedence == "auto_reply":
        return "auto-reply", "precedence auto_reply"
    if _header(msg, "List-Id"):
        return "bulk", "list-id"
    if _header(msg, "List-Unsubscribe"):
        return "bulk", "list-unsubscribe"
    if null_sender:
        return "auto-reply", "null sender"
    if local in _DAEMONS:
        return "bounce", "mailer daemon"
    return None


def _bounced_message_id(msg: EmailMessage) -> str | None:
    """The Message-ID of the message a delivery report is about (ours, usually)."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("text/rfc822-headers", "message/rfc822", "message/rfc822-headers"):
            if ctype == "message/rfc822":
                inner = part.get_payload(0) if part.is_multipart() else None
                ids = threads.msgids(_header(inner, "Message-ID")) if isinstance(inner, Message) else []
            else:
                payload = part.get_payload(decode=True)
                data = payload if isinstance(payload, bytes) else str(part.get_payload()).encode()
                inner_msg = email.message_from_bytes(data, policy=email.policy.compat32)
                ids = threads.msgids(str(inner_msg.get("Message-ID", "")))
            if ids:
                return ids[0]
    return None


def status_blocks(msg: Message) -> list[Message]:
    """The field blocks of ``msg``'s first ``message/delivery-status`` part (RFC 3464): the
    per-message block, then one per recipient; none without such a part."""
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                return [b for b in payload if isinstance(b, Message)]
            if isinstance(payload, str):  # a parser that left it as text
                chunks = re.split(r"\r?\n\s*\r?\n", payload.strip())
                return [email.message_from_string(c, policy=email.policy.compat32) for c in chunks]
            return []
    return []


def delivery_report(msg: Message) -> DeliveryReport | None:
    """The per-recipient fields of the ``message/delivery-status`` part, if there is one."""
    recipients = [b for b in status_blocks(msg) if _header(b, "Action")]
    if not recipients:
        return None
    chosen = next((b for b in recipients if _header(b, "Action").lower() == "failed"), recipients[0])
    return DeliveryReport(
        action=_header(chosen, "Action").lower()[:40],
        status=_header(chosen, "Status")[:40],
        diagnostic=_header(chosen, "Diagnostic-Code")[:500],
    )


_MAILBOX = re.compile(r"<?[^\s@<>\"'(),;:\[\]]+@[^\s@<>\"'(),;:\[\]]+>?")


def bounce_reason(report: DeliveryReport | None) -> str:
    """``bounced: <status> (<diagnostic>)`` on one line, addresses masked, at most 200 chars."""
    if report is None:
        return "bounced: no delivery-status report"
    diagnostic = " ".join(_MAILBOX.sub("[address]", report.diagnostic).split())
    status = " ".join(report.status.split())
    if status and diagnostic:
        text = f"{status} ({diagnostic})"
    else:
        text = status or diagnostic or report.action or "delivery failed"
    reason = f"bounced: {text}"
    return reason if len(reason) <= 200 else reason[:199] + "…"


def _decoded(part: Message) -> str:
    """A text part's content, its transfer encoding undone and its charset read as a mail
    client reads it (``charsets.decode_bytes``): never raises."""
    try:
        payload = part.get_payload(decode=True)
    except Exception as err:  # a transfer encoding broken beyond what the parser forgives
        forgiven("transfer_encoding", err)
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return clean_text(raw) if isinstance(raw, str) else ""
    return decode_bytes(payload, part.get_content_charset())


def _body_text(msg: EmailMessage, unsplit: Sequence[Message] = ()) -> tuple[str, bool, bool]:
    """(text, came from HTML only, the HTML was cut). Plain preferred; HTML converted when there
    is no plain part or the plain part is blank (a multipart/alternative whose text/plain is
    empty). The bodies of ``unsplit`` multiparts follow as they were sent: never dropped."""
    text, html_only, html_cut = "", False, False
    plain = msg.get_body(preferencelist=("plain",))
    if isinstance(plain, EmailMessage):
        text = _decoded(plain).replace("\r\n", "\n").strip()
    html = msg.get_body(preferencelist=("html",)) if not text else None
    if isinstance(html, EmailMessage):
        source = _decoded(html)
        capped = cap_html(source)  # one mail must not hold the event loop for seconds
        html_cut = len(capped) < len(source)
        text, html_only = html_to_text(capped, partial=html_cut), True
    raw = [body for body in (_decoded(part).replace("\r\n", "\n").strip() for part in unsplit) if body]
    if raw:
        text = "\n\n".join([text, *raw] if text else raw)
    return text, html_only, html_cut


def _leaves(msg: Message) -> list[EmailMessage]:
    """The non-multipart parts under ``msg``, without descending into attached messages."""
    out: list[EmailMessage] = []
    payload = msg.get_payload() if msg.is_multipart() and msg.get_content_maintype() == "multipart" else None
    for part in payload if isinstance(payload, list) else ():
        if not isinstance(part, Message):
            continue
        if part.get_content_maintype() == "multipart":
            out.extend(_leaves(part))
        elif isinstance(part, EmailMessage):
            out.append(part)
    return out


def _attachments(msg: EmailMessage, settings: EmailSettings) -> list[AttachmentBody]:
    out: list[AttachmentBody] = []
    if msg.get_content_maintype() != "multipart":
        # A mail that is one file (a scanner's or fax gateway's PDF, a lone photo): that file
        # is its attachment, as in a multipart holding nothing but a file; the text is empty.
        one = msg.get_content_maintype() in _FILE_TYPES or msg.is_attachment()
        parts = [msg] if one or msg.get_content_type() == "message/rfc822" else []
    else:
        parts = [p for p in msg.iter_attachments() if isinstance(p, EmailMessage)]
    # Files the top level does not list: inline images of an HTML body (multipart/related
    # inside multipart/alternative), files inside a nested multipart. Text parts and
    # report parts are the body or bounce machinery, not files.
    listed = {id(p) for p in parts}
    for part in _leaves(msg):
        if id(part) not in listed and part.get_content_maintype() in _FILE_TYPES:
            parts.append(part)
            listed.add(id(part))
    for part in parts:
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload(0) if part.is_multipart() else part.get_payload()
            data = inner.as_bytes() if isinstance(inner, Message) else str(inner).encode()
        else:
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
        digest = hashlib.sha256(data).hexdigest()
        name = filename(part)
        meta = Attachment(
            url=attachment_url(settings.attachment_bucket, digest),
            content_type=ctype,
            name=safe_filename(name, ctype) if name is not None else None,
            size=len(data),
            sha256=digest,
        )
        out.append(AttachmentBody(meta, data))
    return out
