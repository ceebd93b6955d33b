"""Mail no person wrote: auto-replies, bulk mail and bounces (RFC 3834 and friends), and what a
bounce's delivery-status report (RFC 3464) says: the failed recipient's action, status and the
remote server's answer, and the one-line reason a bounced reply is marked failed with.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message

from . import threads
from .headers import header_value

_NULL_SENDERS = {"", "<>"}
_DAEMONS = ("mailer-daemon", "postmaster")


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


def classify_auto(msg: EmailMessage, mail_from: str | None, sender: str) -> tuple[str, str] | None:
    """("bounce" | "auto-reply" | "bulk", reason) for automatic mail (RFC 3834 and friends)."""
    ctype = msg.get_content_type()
    report_type = str(msg.get_param("report-type", "") or "").lower()
    if ctype == "multipart/report" and report_type == "delivery-status":
        return "bounce", "delivery-status report"
    null_sender = mail_from is not None and mail_from.strip() in _NULL_SENDERS
    return_path = header_value(msg, "Return-Path")
    if return_path.replace(" ", "") == "<>":
        null_sender = True
    local = sender.rpartition("@")[0].lower()
    if null_sender and local in _DAEMONS:
        return "bounce", "null sender from mailer daemon"
    if ctype == "multipart/report":
        return "auto-reply", f"report {report_type or 'unknown'}"
    auto_submitted = header_value(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return "auto-reply", f"auto-submitted {auto_submitted}"[:60]
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if header_value(msg, name):
            return "auto-reply", name.lower()
    precedence = header_value(msg, "Precedence").lower()
    if precedence in ("bulk", "junk", "list"):
        return "bulk", f"precedence {precedence}"
    if precedence == "auto_reply":
        return "auto-reply", "precedence auto_reply"
    if header_value(msg, "List-Id"):
        return "bulk", "list-id"
    if header_value(msg, "List-Unsubscribe"):
        return "bulk", "list-unsubscribe"
    if null_sender:
        return "auto-reply", "null sender"
    if local in _DAEMONS:
        return "bounce", "mailer daemon"
    return None


def bounced_message_id(msg: EmailMessage) -> str | None:
    """The Message-ID of the message a delivery report is about (ours, usually)."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("text/rfc822-headers", "message/rfc822", "message/rfc822-headers"):
            if ctype == "message/rfc822":
                inner = part.get_payload(0) if part.is_multipart() else None
                ids = threads.msgids(header_value(inner, "Message-ID")) if isinstance(inner, Message) else []
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
    recipients = [b for b in status_blocks(msg) if header_value(b, "Action")]
    if not recipients:
        return None
    chosen = next((b for b in recipients if header_value(b, "Action").lower() == "failed"), recipients[0])
    return DeliveryReport(
        action=header_value(chosen, "Action").lower()[:40],
        status=header_value(chosen, "Status")[:40],
        diagnostic=header_value(chosen, "Diagnostic-Code")[:500],
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
