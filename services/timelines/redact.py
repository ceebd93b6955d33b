"""Forgetting an erased customer (``CustomerErased``): the rows stay, their personal data goes.

A timeline entry keeps its shape (kind, sequence, conversation, channel, direction, agent,
routing reason) so timelines page the same and reports keep their figures; its text and
the personal parts of its detail (contact, identity, attachment names and locations, free
text an agent or a provider wrote about the person) read as ``ERASED``. A customer row keeps
its tier, flags, counts and times; its identities and CRM id read as ``ERASED``.

The same redaction runs live (the projector, on ``CustomerErased``) and in a rebuild (the
fold of the whole log meets the same event), so a rebuild stays redacted even where the
log itself could still be read. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.timelines.rows import CustomerSummary, TimelineEntry

ERASED = "[erased]"
"""What an erased value reads as (the same word ``events.personal`` uses for a destroyed key)."""
EXPIRED = "[expired]"
"""A message body past ``[retention] message_days`` (the same word ``events.personal`` uses)."""
BODY_KINDS = ("message_in", "message_out", "note")
"""Entries whose text is a message body (``MessageReceived``, ``ReplyRequested``, ``NoteAdded``):
what ``[retention] message_days`` expires (``TimelineStore.expire_bodies``)."""

# Detail keys that hold personal data, by what replaces them.
_ERASED_DETAIL = ("contact", "identity", "note", "crm_id", "subject")
# Free text whose meaning depends on the entry: a failure reason may quote the address
# (``bounced: 550 <ann@example.com> unknown``), an escalation reason is an agent's words.
_ERASED_REASON_KINDS = ("delivery_failed", "escalated", "identity_unlinked")
_ATTACHMENT_KEEP = ("content_type", "size")


def _attachment(value: Any) -> Any:
    if not isinstance(value, dict):
        return ERASED
    out: dict[str, Any] = {k: v for k, v in value.items() if k in _ATTACHMENT_KEEP}
    if value.get("name") is not None:
        out["name"] = ERASED
    return out


def redact_detail(kind: str, detail: dict[str, Any] | None) -> dict[str, Any] | None:
    if not detail:
        return detail
    out = dict(detail)
    for key in _ERASED_DETAIL:
        if out.get(key) not in (None, ""):
            out[key] = ERASED
    if kind in _ERASED_REASON_KINDS and out.get("reason") not in (None, ""):
        out["reason"] = ERASED
    if isinstance(out.get("attachments"), list):
        out["attachments"] = [_attachment(a) for a in out["attachments"]]
    return out


def redact_entry(entry: TimelineEntry) -> TimelineEntry:
    """``entry`` with its personal data erased (the same entry if it holds none)."""
    updates: dict[str, Any] = {}
    if entry.text:
        updates["text"] = ERASED
    detail = redact_detail(entry.kind, entry.detail)
    if detail != entry.detail:
        updates["detail"] = detail
    if entry.kind == "customer_created" and entry.channel is not None:
        # Derived from the identity's kind: a rebuild, which cannot read the identity, has none.
        updates["channel"] = None
    return msgspec.structs.replace(entry, **updates) if updates else entry


def redact_customer(customer: CustomerSummary) -> CustomerSummary:
    """The customer's row once erased: no identities nor CRM id, everything else kept."""
    return msgspec.structs.replace(
        customer,
        identities=[ERASED] if customer.identities else [],
        crm_id=ERASED if customer.crm_id else customer.crm_id,
        erased=True,
    )
