"""Applying changes to summaries: ``merge`` (a conversation), ``merge_customer`` (a customer),
and ``with_family`` (a customer as read, with the customers merged into it). Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from services.timelines.changes import KEEP, CustomerChange, SummaryChange
from services.timelines.rows import ConversationSummary, CustomerSummary


def merge(current: ConversationSummary | None, change: SummaryChange) -> ConversationSummary:
    """The summary after ``change``; a change not newer than the summary is ignored."""
    if current is None:
        current = ConversationSummary(
            conversation_id=change.conversation_id,
            customer_id=change.customer_id,
            channel=None,
            status="waiting",
            agent_id=None,
            opened_at=None,
            last_activity_at=change.at,
        )
    elif change.seq <= current.last_seq:
        return current
    updates: dict[str, Any] = {"last_seq": change.seq}
    if change.channel is not KEEP and change.channel is not None:
        updates["channel"] = change.channel
    if change.status is not KEEP:
        updates["status"] = change.status
        if change.status != "resolved":
            updates["resolved_at"] = None
    if change.agent_id is not KEEP:
        updates["agent_id"] = change.agent_id
    if change.last_reason is not KEEP:
        updates["last_reason"] = change.last_reason
    if change.opened and current.opened_at is None:
        updates["opened_at"] = change.at
    if change.resolved:
        updates["resolved_at"] = change.at
    if change.activity or current.last_seq == 0:
        updates["last_activity_at"] = change.at
    if change.messages:
        updates["message_count"] = current.message_count + change.messages
    if change.transfers:
        updates["transfer_count"] = current.transfer_count + change.transfers
    if change.priority is not KEEP:
        updates["priority"] = change.priority
    if change.sla_due is not KEEP:
        updates["sla_due"] = change.sla_due
    if change.assigned and current.first_assigned_at is None:
        updates["first_assigned_at"] = change.at
    if change.responded and current.first_response_at is None:
        updates["first_response_at"] = change.at
    if change.declined:
        updates["offers_declined"] = current.offers_declined + change.declined
    if change.expired:
        updates["offers_expired"] = current.offers_expired + change.expired
    return msgspec.structs.replace(current, **updates)


def merge_customer(current: CustomerSummary | None, change: CustomerChange) -> CustomerSummary:
    """The customer summary after ``change``; a change not newer than the summary is ignored."""
    if current is None:
        current = CustomerSummary(customer_id=change.customer_id)
    elif change.seq <= current.last_seq:
        return current
    if (
        change.activity
        and change.identity is None
        and change.profile is None
        and not change.created
        and not change.conversations
    ):
        # Activity alone (most events of a conversation): the common case, without the dict.
        return msgspec.structs.replace(current, last_seq=change.seq, last_activity_at=change.at)
    updates: dict[str, Any] = {"last_seq": change.seq}
    if change.identity is not None and change.identity not in current.identities:
        updates["identities"] = sorted([*current.identities, change.identity])
    if change.profile is not None:
        updates.update(change.profile)
    if change.created and current.created_at is None:
        updates["created_at"] = change.at
    if change.conversations:
        updates["conversation_count"] = current.conversation_count + change.conversations
    if change.activity:
        updates["last_activity_at"] = change.at
    return msgspec.structs.replace(current, **updates)


def with_family(
    customer: CustomerSummary, absorbed: Iterable[CustomerSummary], merged: Iterable[str], merged_into: str | None
) -> CustomerSummary:
    """A customer as read: its own row plus what the customers merged into it contribute."""
    absorbed = list(absorbed)
    identities = sorted({*customer.identities, *(i for a in absorbed for i in a.identities)})
    return msgspec.structs.replace(
        customer,
        identities=identities,
        conversation_count=customer.conversation_count + sum(a.conversation_count for a in absorbed),
        merged=sorted(merged),
        merged_into=merged_into,
    )
