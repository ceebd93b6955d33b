"""Events folded twice: a fact re-published onto the log at a later sequence (an operator's
partial restore after JetStream's duplicate window, a replay tool run twice) changes nothing.

Events carry no id of their own, so an event is known by its content: the 8-byte digest of its
encoding with its personal fields blanked (``events.digests.fingerprint``). Two genuine events
of one conversation never encode alike (each has its own time, agent, step, message id...).
What is remembered, and for how long:

* an open conversation keeps the digests of the events the fold applied to it
  (``ConversationView.folded``): bounded by open work, dropped with the view at resolution;
* a customer keeps the digest of each of its conversations that was resolved
  (``CustomerView.closed``, 8 bytes each): a conversation is never opened again (a returning
  customer's message opens a new one, intake and the API's outbound start both make a new id),
  so an opening or a routing request for a resolved conversation can only be a re-publication.

Messages, replies and deliveries are not remembered: the router folds nothing of them but
their subject's sequence, which a repeat moves too (it is the subject's last message)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from events.digests import DIGEST, holds, remembered
from events.model import (
    AgentOffered,
    ConversationAssigned,
    ConversationEscalated,
    ConversationLanguageChanged,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    EscalationStepReached,
    LogEvent,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    RoutingRequested,
)
from router.state import AgentView, ConversationView, CustomerView, RouterState

# Beside the facts (not snapshotted): the sequence of the last event the fold found repeated.
LAST_REPEAT = "_last_repeat"

# The conversation events the fold interprets: each is folded once.
REMEMBERED: frozenset[type] = frozenset(
    {
        ConversationOpened,
        RoutingRequested,
        ConversationLanguageChanged,
        AgentOffered,
        ConversationAssigned,
        OfferAccepted,
        OfferDeclined,
        OfferExpired,
        EscalationStepReached,
        ConversationTransferred,
        ConversationEscalated,
        ConversationReleased,
        ConversationResolved,
    }
)


# How much older than the newest fact of its kind an agent's status or profile fact, or a
# customer's profile, may be and still be folded: writers' clocks differ by seconds, never by
# this; a re-published fact (a restore, a replay) is hours or days older.
STALE_AFTER = timedelta(minutes=5)


def stale(about: AgentView | CustomerView, at: datetime) -> bool:
    """Whether a fact about an agent or customer written at ``at`` is a re-published old one,
    given the newest such fact folded (``changed_at``); if not, ``at`` is the newest now."""
    newest = about.changed_at
    if newest is not None and at < newest - STALE_AFTER:
        return True
    if newest is None or at > newest:
        about.changed_at = at
    return False


def id_digest(conversation_id: str) -> bytes:
    return hashlib.blake2b(conversation_id.encode(), digest_size=DIGEST).digest()


def folded_before(conv: ConversationView, event: LogEvent) -> bool:
    """``event`` was folded into ``conv`` already (or opens a conversation already open: one is
    never opened twice); otherwise it is remembered as folded now.

    Two digests would never be looked up, so they are not made (a digest is ~1-2 µs, a fifth of
    the fold of these events): an opening's (a repeated one is known by ``opened_at``, and no
    other event encodes like it) and a resolution's (folding one drops the view with its
    digests, and a repeat then finds no view)."""
    kind = type(event)
    if kind is ConversationOpened:
        return conv.opened_at is not None
    if kind is ConversationResolved:
        return False
    folded = remembered(conv.folded, event)
    if folded is None:
        return True
    conv.folded = folded
    return False


def was_resolved(customer: CustomerView | None, conversation_id: str) -> bool:
    return customer is not None and bool(customer.closed) and holds(customer.closed, id_digest(conversation_id))


def resolved(customer: CustomerView, conversation_id: str) -> None:
    digest = id_digest(conversation_id)
    if not holds(customer.closed, digest):
        customer.closed += digest


def was_repeat(state: RouterState, seq: int) -> bool:
    """The fold found the event at ``seq`` (the last it folded) folded before: it changed nothing,
    so whoever tells people about events (delivery's notices) says nothing of it either."""
    return state.__dict__.get(LAST_REPEAT) == seq
