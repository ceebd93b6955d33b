"""Mail of ours come back: our replies and agent notices journalled or forwarded back, agents
answering a notice (``own_mail``: never published, a mail loop otherwise), and bounces of our
replies (``bounce_of_ours``: reported as the reply's outcome, not published as a customer's
message; a bounce of a Cc'd copy only is dropped and counted).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from connectors.sdk import Unavailable
from connectors.sdk.metrics import Metrics
from connectors.sdk.publish import InboundPublisher, Published

from . import threads
from .automatic import bounce_reason
from .bounces import CopyBounce, SentReplies, bounce_report, customer_failure, failed_recipients, our_id
from .parse import ParsedEmail
from .settings import EmailSettings

log = structlog.get_logger("relaydesk.connector.email")

# Every agent notice of the delivery service carries it (services/delivery/render.py).
NOTICE_HEADER = "X-Relaydesk-Delivery"
# Agent notices' Message-IDs are ``rd.notice.<hash>@<domain>`` (services/delivery/render.py).
NOTICE_ID_PREFIX = "notice."
_HEADER_END = re.compile(rb"\r?\n\r?\n")
HEADER_SCAN_BYTES = 256 * 1024  # where a header section ends, in any mail worth reading


@dataclass(frozen=True)
class Dropped:
    """Accepted and not published, on purpose: ``why`` (``own_mail``: ours come back;
    ``bounce_of_copy``: a Cc'd copy of a reply refused, the customer got it)."""

    why: str

    @property
    def key(self) -> str:
        return f"dropped.{self.why}"


def own_mail(parsed: ParsedEmail, raw: bytes, settings: EmailSettings) -> str | None:
    """Why ``parsed`` is mail Relaydesk sent itself (an agent's reply, an agent notice) come
    back, or an answer to a notice; None for anybody else's. Such mail published would make
    us a customer of ours, with a conversation whose notice comes back again: a mail loop.
    Checked here, on our own identity, not in the parser (``classify_auto`` reads what mail
    says about itself, and ours says nothing of the kind)."""
    message = parsed.message
    domains = settings.own_id_domains()

    def ours(message_id: str | None) -> str | None:
        ids = threads.msgids(message_id)
        local = our_id(ids[0]) if ids else None
        if local is None or ids[0].rpartition("@")[2].lower() not in domains:
            return None
        return local

    if ours(message.metadata.get("message_id")) is not None:
        return "own_message_id"  # an agent's reply or a notice, journalled or forwarded back
    if message.sender.lower() in settings.own_senders():
        return "own_sender"
    head = _HEADER_END.split(raw[:HEADER_SCAN_BYTES], 1)[0]
    if email.message_from_bytes(head, policy=email.policy.compat32).get(NOTICE_HEADER) is not None:
        return "notice_header"  # a notice whose From a forwarder rewrote
    if (local := ours(message.metadata.get("in_reply_to"))) is not None and local.startswith(NOTICE_ID_PREFIX):
        return "notice_reply"  # an agent (or her out-of-office) answering a notice, not a customer
    return None


async def bounce_of_ours(
    parsed: ParsedEmail,
    raw: bytes,
    *,
    replies: SentReplies | None,
    publisher: InboundPublisher | None,
    metrics: Metrics,
    timeout: float,
    now: Callable[[], datetime],
) -> Published | Dropped | None:
    """A failed-delivery bounce of one of our replies: reported as the reply's outcome
    (``bounced``; intake appends ``DeliveryFailed`` on its conversation once), and not
    published as a customer message; when it names only other recipients than the
    customer (a Cc'd copy refused), dropped and counted, no outcome. None for everything
    else (unknown Message-ID, delay/success reports, any other mail): published as usual."""
    md = parsed.message.metadata
    if md.get("auto") != "bounce" or replies is None or publisher is None:
        return None
    local = our_id(md.get("bounced_message_id"))
    if local is None or local.startswith(NOTICE_ID_PREFIX):
        return None  # not ours, or an agent notice's (never remembered)
    if parsed.report is not None and not parsed.report.failed:
        return None
    try:
        async with asyncio.timeout(timeout):
            sent = await replies.lookup(local)
    except Exception as err:
        raise Unavailable(f"bounce not recorded: {type(err).__name__}") from err
    if sent is None:
        return None
    # Whom the report says failed: a Cc'd copy refused is not the customer's reply failed.
    failed = failed_recipients(raw) if parsed.report is not None else []
    about = customer_failure(sent, failed, parsed.report)
    if isinstance(about, CopyBounce):
        metrics.reject("bounce_of_copy")
        log.info(
            "inbound.bounce_of_copy",
            reply_id=sent.reply_id,
            customer_id=sent.customer_id,
            conversation_id=sent.conversation_id,
            failed=about.failed,
            reason=bounce_reason(failed[0].report),  # addresses masked
        )
        return Dropped("bounce_of_copy")
    reason = bounce_reason(about)
    try:
        async with asyncio.timeout(timeout):
            reported = await publisher.report(bounce_report(sent, reason, now()))
    except Exception as err:
        raise Unavailable(f"bounce not recorded: {type(err).__name__}") from err
    # The SDK's counters: a reported bounce counts as a message received and acknowledged.
    metrics.inc("received")
    metrics.inc("duplicates" if reported.duplicate else "published")
    log.info(
        "inbound.bounce_reported",
        reply_id=sent.reply_id,
        customer_id=sent.customer_id,
        conversation_id=sent.conversation_id,
        seq=reported.seq,
        duplicate=reported.duplicate,
        reason=reason,
    )
    return Published(parsed.message, reported.seq, reported.duplicate)
