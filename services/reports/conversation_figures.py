"""One conversation's service figures from its facts: first response, time to assign, handle
time, resolved / abandoned / erased, reopen, first-contact resolution, SLA met or breached,
and for a call its call figures. Pure, given the policy's SLA seconds, the reopen window and
"now"; the definitions are those of ``services.reports.metrics``, which sums these figures into
a report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.reports.fold import ConversationFacts
from services.reports.voice import CallFacts, CallFigures, call_figures


@dataclass(frozen=True)
class ConversationFigures:
    first_response: float | None
    time_to_assign: float | None
    handle: float | None
    resolved: bool
    reopened: bool
    is_reopen: bool
    fcr: bool
    sla: str | None  # "met", "breached" or None (not counted)
    transfers: int
    call: CallFigures | None = None  # voice conversations only
    escalations: int = 0
    abandoned: bool = False  # closed before any agent took it (not by an erasure)
    erased: bool = False  # ended by the customer's erasure
    # Held by an agent at some time: routed and taken, or opened by an agent (outbound-first,
    # never routed, so no time to assign; found by an audit counted as not assigned).
    assigned: bool = False


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def sla_due(conv: ConversationFacts, sla_seconds: Mapping[str, float]) -> datetime | None:
    if conv.sla_due is not None:
        return conv.sla_due
    if conv.routed_at is None or conv.channel is None:
        return None
    seconds = sla_seconds.get(conv.channel)
    if seconds is None or not math.isfinite(seconds):
        return None
    try:
        return conv.routed_at + timedelta(seconds=seconds)
    except OverflowError:
        # A policy may give any finite SLA (1e12 s is 31,700 years): due after the last time
        # there is compares as "not yet due" with every event time, like the exact sum would.
        return datetime.max.replace(tzinfo=UTC)


def figures(
    conv: ConversationFacts, *, now: datetime, sla_seconds: Mapping[str, float], reopen_hours: float
) -> ConversationFigures:
    window = timedelta(hours=reopen_hours)
    reopened = (
        conv.resolved_at is not None
        and conv.next_opened_at is not None
        and conv.next_opened_at - conv.resolved_at <= window
    )
    opened = conv.day_at
    is_reopen = (
        conv.previous_resolved_at is not None and opened is not None and opened - conv.previous_resolved_at <= window
    )
    served = conv.first_assigned_at is not None or conv.outbound
    closed = conv.resolved_at is not None
    resolved = closed and served and not conv.erased
    due = sla_due(conv, sla_seconds)
    sla: str | None = None
    if due is not None:
        if conv.first_assigned_at is not None:
            sla = "met" if conv.first_assigned_at <= due else "breached"
        elif (conv.resolved_at or now) > due:
            sla = "breached"
    if conv.first_message_at is not None:
        first_response = _seconds(conv.first_message_at, conv.first_reply_after_message_at)
    else:
        first_response = None if conv.outbound else _seconds(conv.opened_at, conv.first_response_at)
    return ConversationFigures(
        first_response=first_response,
        time_to_assign=_seconds(conv.routed_at, conv.first_assigned_at),
        handle=None if conv.erased else _seconds(conv.first_assigned_at, conv.resolved_at),
        resolved=resolved,
        reopened=reopened,
        is_reopen=is_reopen,
        fcr=resolved and conv.transfers == 0 and conv.escalations == 0 and not reopened,
        sla=sla,
        transfers=conv.transfers,
        call=call_figures(conv.call or CallFacts(), due) if conv.channel == "voice" else None,
        assigned=conv.first_assigned_at is not None,
        escalations=conv.escalations,
        abandoned=closed and not served and not conv.erased,
        erased=closed and conv.erased,
    )
