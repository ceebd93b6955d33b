"""Applying changes to summaries: ``merge`` (a conversation), ``merge_customer`` (a customer),
and ``with_family`` (a customer as read, with the customers merged into it). Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from services.timelines.changes import KEEP, CustomerChange, SummaryChange
from services.timelines.rows import ConversationSummary, CustomerSummary


def merge(current: ConversationSummary | None, change: SummaryChange, digest: bytes = b"") -> ConversationSummary:
    """The summary after ``change``, remembering ``digest`` (the event's, ``events.digests``) as
    folded; a change not newer than the summary is ignored."""
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
    elif (current.status == "resolved" and not _after_resolution(change)) or (
        change.opened and current.opened_at is not None
    ):
        # A resolved conversation is never opened, routed or counted again (a returning
        # customer's message opens a new one), nor is one opened twice. Its entry is written
        # all the same (a decision that raced the resolution), so its digest is remembered:
        # the same event re-published later writes no second entry.
        return msgspec.structs.replace(current, folded=current.folded + digest) if digest else current
    # Every field computed here and one struct made (a rebuild merges once an event): what a
    # dict of updates and ``structs.replace`` did, without the dict. Through ``replace``, not
    # the class: a call of the class with more than 15 keywords builds a dict of them (1.16 µs
    # against 0.34 µs here, measured; about 9% of a rebuild's writer).
    at = change.at
    status = change.status
    if change.resolved:
        resolved_at = at
    elif status is not KEEP and status != "resolved":
        resolved_at = None
    else:
        resolved_at = current.resolved_at
    channel = change.channel
    return msgspec.structs.replace(
        current,
        channel=current.channel if channel is KEEP or channel is None else channel,
        status=current.status if status is KEEP else status,
        agent_id=current.agent_id if change.agent_id is KEEP else change.agent_id,
        opened_at=at if change.opened and current.opened_at is None else current.opened_at,
        last_activity_at=at if change.activity or current.last_seq == 0 else current.last_activity_at,
        resolved_at=resolved_at,
        transfer_count=current.transfer_count + change.transfers,
        message_count=current.message_count + change.messages,
        last_reason=current.last_reason if change.last_reason is KEEP else change.last_reason,
        last_seq=change.seq,
        priority=current.priority if change.priority is KEEP else change.priority,
        sla_due=current.sla_due if change.sla_due is KEEP else change.sla_due,
        first_assigned_at=at if change.assigned and current.first_assigned_at is None else current.first_assigned_at,
        first_response_at=at if change.responded and current.first_response_at is None else current.first_response_at,
        offers_declined=current.offers_declined + change.declined,
        offers_expired=current.offers_expired + change.expired,
        folded=current.folded + digest,
    )


def _after_resolution(change: SummaryChange) -> bool:
    """What may still happen to a resolved conversation: a reply's outcome (sent, failed,
    bounced) or a note; nothing that changes its status, agent or counts."""
    return (
        change.status is KEEP
        and change.agent_id is KEEP
        and not (change.opened or change.resolved or change.messages or change.transfers)
        and not (change.declined or change.expired or change.assigned or change.responded)
    )


def merge_customer(current: CustomerSummary | None, change: CustomerChange) -> CustomerSummary:
    """The customer summary after ``change``; a change not newer than the summary is ignored."""
    if current is None:
        current = CustomerSummary(customer_id=change.customer_id)
    elif change.seq <= current.last_seq:
        return current
    if (
        change.activity
        and change.identity is None
        and change.unlinked is None
        and change.profile is None
        and not change.created
        and not change.conversations
    ):
        # Activity alone (most events of a conversation): the common case, without the dict.
        return msgspec.structs.replace(current, last_seq=change.seq, last_activity_at=change.at)
    updates: dict[str, Any] = {"last_seq": change.seq}
    if change.identity is not None and change.identity not in current.identities:
        updates["identities"] = sorted([*current.identities, change.identity])
    if change.unlinked is not None and change.unlinked in current.identities:
        updates["identities"] = [i for i in current.identities if i != change.unlinked]
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
