"""Reply outcomes: what connectors report on ``rd.inbound.<channel>`` becomes the log's
``MessageSent`` / ``DeliveryFailed``, exactly once per reply.

Connectors never write the log (their NATS role may publish only ``rd.inbound.<channel>``).
After delivering a ``DeliverReply`` a connector publishes ``ReplyOutcomeReported``; intake
reads the conversation's subject and appends the fact unless it is there already:

* ``sent`` / ``failed``: one ``MessageSent`` or ``DeliveryFailed`` per reply id (the first
  report wins; a redelivered or re-published report adds nothing);
* ``bounced``: one ``DeliveryFailed(reason="bounced: …")`` per reply id, even after its
  ``MessageSent`` (a bounce arrives after the send).

The append is guarded by the subject's last sequence read before the history, so two intake
workers handling the same report cannot both append; its ``Nats-Msg-Id`` is the one the
connectors used when they appended themselves (``delivery:<channel>:<reply id>``,
``bounce:<reply id>``), so a report of an outcome an older connector already appended is
deduplicated by JetStream too.

A report is recorded only for a reply the log asked for: a ``ReplyRequested`` with that reply
id on that conversation, on the report's channel. Anything else (a stray or forged report,
another channel's reply) is dropped with a warning: a connector's credentials do not let it
write facts about other channels' conversations through intake either.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import structlog

from events import subjects
from events.model import DeliveryFailed, MessageSent, ReplyOutcomeReported, ReplyRequested
from events.store import Append, ConcurrencyError, EventStore, StoredEvent
from services import tracing

log = structlog.get_logger(__name__)

MAX_CONFLICT_RETRIES = 12


def outcome_msg_id(report: ReplyOutcomeReported) -> str:
    """The ``Nats-Msg-Id`` of the recorded fact (the same the connectors used before)."""
    if report.outcome == "bounced":
        return f"bounce:{report.reply_id}"
    return f"delivery:{report.channel}:{report.reply_id}"


def is_bounce(event: DeliveryFailed) -> bool:
    """A bounce (older ones carry no flag: their reason starts with ``bounced``)."""
    return event.bounced or event.reason.startswith("bounced")


def already_recorded(history: Sequence[StoredEvent], report: ReplyOutcomeReported) -> StoredEvent | None:
    """The event that already records ``report``'s outcome, if any."""
    for item in history:
        event = item.event
        if not isinstance(event, MessageSent | DeliveryFailed) or event.reply_id != report.reply_id:
            continue
        if report.outcome == "bounced":
            if isinstance(event, DeliveryFailed) and is_bounce(event):
                return item
        elif isinstance(event, MessageSent) or not is_bounce(event):
            return item
    return None


def requested(history: Sequence[StoredEvent], reply_id: str) -> ReplyRequested | None:
    for item in history:
        if isinstance(item.event, ReplyRequested) and item.event.reply_id == reply_id:
            return item.event
    return None


async def record_outcome(store: EventStore, report: ReplyOutcomeReported) -> int | None:
    """Append the fact for ``report`` once; returns its stream sequence, or None when nothing
    was appended (recorded before, or not a reply the log knows). Raises NATS errors and,
    after repeated conflicts, ``RuntimeError`` (the message is then redelivered)."""
    subject = subjects.conversation(report.customer_id, report.conversation_id)
    bound = log.bind(
        customer_id=report.customer_id,
        conversation_id=report.conversation_id,
        reply_id=report.reply_id,
        channel=report.channel,
        outcome=report.outcome,
    )
    for attempt in range(MAX_CONFLICT_RETRIES):
        # The guard first, then the history: whatever is appended after the guard was read
        # makes the append fail and the history be read again.
        last = await store.last_subject_seq(subject)
        history = await store.read(subject)
        asked = requested(history, report.reply_id)
        if asked is None or asked.channel != report.channel:
            bound.warning(
                "intake.outcome_dropped",
                reason="no such reply on this conversation" if asked is None else "reply is for another channel",
            )
            return None
        seen = already_recorded(history, report)
        if seen is not None:
            bound.info("intake.outcome_duplicate", recorded_seq=seen.seq)
            return None
        fact = report.recorded()
        try:
            # Tracing on: the connector's delivery span, continued by intake.record (consumer.py).
            trace = tracing.headers()
            seq = await store.append(
                Append(fact, subject=subject, expected=last, msg_id=outcome_msg_id(report), trace=trace)
            )
        except ConcurrencyError:
            bound.debug("intake.outcome_conflict_retry", attempt=attempt)
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
            continue
        # Once per reply: at debug, like intake.recorded (README, Observability).
        bound.debug("intake.outcome_recorded", seq=seq, fact=type(fact).__name__)
        return seq
    raise RuntimeError(f"intake: conversation {report.conversation_id} kept changing; giving up for redelivery")
