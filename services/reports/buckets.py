"""Sums of conversation and offer figures, one ``Bucket`` per group, per hour or for the whole
window (pure), and how each reads in the report: counts, rates and duration statistics (see
``services.reports.metrics`` for the definitions)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from services.reports.conversation_figures import ConversationFigures
from services.reports.fold import OfferFact
from services.reports.voice import VoiceBucket


def stats(values: list[float]) -> dict[str, Any]:
    """Count, mean, median and 90th percentile (nearest rank), rounded to milliseconds."""
    if not values:
        return {"count": 0, "mean": None, "median": None, "p90": None}
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    p90 = ordered[max(0, math.ceil(0.9 * n) - 1)]
    return {"count": n, "mean": round(sum(ordered) / n, 3), "median": round(median, 3), "p90": round(p90, 3)}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class Bucket:
    conversations: int = 0
    assigned: int = 0
    responded: int = 0
    resolved: int = 0
    first_response: list[float] = field(default_factory=list)
    time_to_assign: list[float] = field(default_factory=list)
    handle: list[float] = field(default_factory=list)
    transfers: int = 0
    transferred: int = 0
    escalations: int = 0
    escalated: int = 0
    abandoned: int = 0
    erased: int = 0
    reopened: int = 0
    reopens: int = 0
    fcr: int = 0
    sla_met: int = 0
    sla_breached: int = 0
    offers: int = 0
    accepted: int = 0
    declined: int = 0
    expired: int = 0
    voice: VoiceBucket = field(default_factory=VoiceBucket)  # the calls among the conversations

    def add(self, f: ConversationFigures) -> None:
        self.conversations += 1
        if f.assigned or f.time_to_assign is not None:
            self.assigned += 1
        if f.time_to_assign is not None:
            self.time_to_assign.append(f.time_to_assign)
        if f.first_response is not None:
            self.responded += 1
            self.first_response.append(f.first_response)
        if f.handle is not None:
            self.handle.append(f.handle)
        self.resolved += f.resolved
        self.transfers += f.transfers
        self.transferred += f.transfers > 0
        self.escalations += f.escalations
        self.escalated += f.escalations > 0
        self.abandoned += f.abandoned
        self.erased += f.erased
        self.reopened += f.reopened
        self.reopens += f.is_reopen
        self.fcr += f.fcr
        self.sla_met += f.sla == "met"
        self.sla_breached += f.sla == "breached"
        if f.call is not None:
            self.voice.add(f.call)

    def add_offer(self, offer: OfferFact) -> None:
        self.offers += 1
        self.accepted += offer.outcome == "accepted"
        self.declined += offer.outcome == "declined"
        self.expired += offer.outcome == "expired"

    def json(self) -> dict[str, Any]:
        answered = self.accepted + self.declined + self.expired
        return {
            "conversations": self.conversations,
            "assigned": self.assigned,
            "responded": self.responded,
            "resolved": self.resolved,
            "abandoned": self.abandoned,
            "abandon_rate": _rate(self.abandoned, self.resolved + self.abandoned),
            "erased": self.erased,
            "first_response_seconds": stats(self.first_response),
            "time_to_assign_seconds": stats(self.time_to_assign),
            "handle_seconds": stats(self.handle),
            "transfers": self.transfers,
            "transferred_conversations": self.transferred,
            "escalations": self.escalations,
            "escalated_conversations": self.escalated,
            "reopened": self.reopened,
            "reopens": self.reopens,
            "reopen_rate": _rate(self.reopened, self.resolved),
            "first_contact_resolutions": self.fcr,
            "fcr_rate": _rate(self.fcr, self.resolved),
            "sla_met": self.sla_met,
            "sla_breached": self.sla_breached,
            "sla_attainment": _rate(self.sla_met, self.sla_met + self.sla_breached),
            "offers": self.offers,
            "offers_accepted": self.accepted,
            "offers_declined": self.declined,
            "offers_expired": self.expired,
            "decline_rate": _rate(self.declined, answered),
            "expiry_rate": _rate(self.expired, answered),
            "voice": voice_json(self.voice),
        }


def voice_json(bucket: VoiceBucket) -> dict[str, Any] | None:
    """The call figures (``services.reports.voice``); None when the bucket holds no call."""
    if not bucket.calls:
        return None
    return {
        "calls": bucket.calls,
        "answered": bucket.answered,
        "answered_within_sla": bucket.answered_within_sla,
        "service_level": _rate(bucket.answered_within_sla, bucket.calls),
        "abandoned": bucket.abandoned,
        "abandon_rate": _rate(bucket.abandoned, bucket.calls),
        "missed": bucket.missed,
        "agent_no_answer": bucket.agent_no_answer,
        "voicemails": bucket.voicemails,
        "callbacks_requested": bucket.callbacks_requested,
        "callbacks_placed": bucket.callbacks_placed,
        "handle_seconds": stats(bucket.handle),
    }


def hour_json(hour: int, bucket: Bucket) -> dict[str, Any]:
    """One hour's row of the hourly series: conversations, waits and SLA."""
    wait = stats(bucket.time_to_assign)
    return {
        "hour": hour,
        "conversations": bucket.conversations,
        "assigned": bucket.assigned,
        "mean_wait_seconds": wait["mean"],
        "median_wait_seconds": wait["median"],
        "p90_wait_seconds": wait["p90"],
        "sla_met": bucket.sla_met,
        "sla_breached": bucket.sla_breached,
        "sla_attainment": _rate(bucket.sla_met, bucket.sla_met + bucket.sla_breached),
    }
