"""Offer and assignment notices the log has already answered: when a notice counts as late,
where its conversation is now, and why a record of such a notice is not tried again.

A notice notified late (a first start, a restart after an outage, an endpoint added) for an
offer that was accepted, declined or let expire, or a conversation that moved or was resolved,
is left out. Found by a docs audit: a new endpoint was sent "offer" notices for offers long
accepted, an erased customer's among them. Notified live, a notice goes out whatever follows it
at once (the agent may be quicker than her tool).
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from router.state import RouterState
from services.delivery.notices import Notice
from services.delivery.records import DeliveryRecord

log = structlog.get_logger(__name__)

# A fact folded this long after it happened is notified late (catching up): its offer or
# assignment notice goes out only if the log has not answered it meanwhile.
LATE_AFTER = timedelta(seconds=30)


def answered(state: RouterState, kind: str, conversation_id: str, agent_id: str) -> str | None:
    """Where the conversation of an offer or assignment notice to ``agent_id`` is now, if the
    log has answered that notice (None: it still stands, or the notice is of another kind)."""
    if kind not in ("offer", "assigned"):
        return None
    conv = state.conversations.get(conversation_id)
    wanted = "offered" if kind == "offer" else "assigned"
    if conv is not None and conv.status == wanted and conv.agent_id == agent_id:
        return None
    return conv.status if conv is not None else "resolved"


def moot(state: RouterState, notice: Notice) -> bool:
    """Whether a notice notified late is left out, the log having answered it (said in the log)."""
    now = answered(state, notice.kind, notice.conversation_id, notice.agent_id)
    if now is None:
        return False
    log.info(
        "delivery.late_notice_moot",
        notice=notice.kind,
        seq=notice.seq,
        agent_id=notice.agent_id,
        conversation_id=notice.conversation_id,
        now=now,
    )
    return True


def superseded_reason(notice: str, status: str) -> str:
    """Why a notice the log has answered is not tried again, as its record's ``reason`` says it
    (``GET /v1/deliveries``): an ``assigned`` notice read "the assigned no longer stands"."""
    what = {"offer": "offer", "assigned": "assignment"}.get(notice, notice)
    return f"the {what} no longer stands: the conversation is {status} now"


def superseded(state: RouterState, record: DeliveryRecord) -> str | None:
    """Why a record's offer or assignment notice should not be tried again (``Rounds``)."""
    now = answered(state, record.notice, record.conversation_id, record.agent_id)
    return None if now is None else superseded_reason(record.notice, now)
