"""Taking an address away from a customer (``IdentityUnlinked``).

An address linked by mistake, or a phone number that passed to someone else, kept resolving
to the customer for good: every message from it landed on their timeline. Unlinking writes
``IdentityUnlinked`` on the ``_customer`` subject of each member of the family whose log gives
it the address (the customer, or one merged into it), then removes the address from the
``rd_identity`` index where it still names one of them. The next message from it starts a new
customer; what came from it before stays this customer's (their conversations, timeline and
an erasure of them included). A chat address's web chat history (``RD_CHAT``) is kept per
address, and the widget shows it to whoever holds the visitor id next: the family's frames are
taken from it last (``unlink_chat``: as an erasure picks them, ``erase_match.chat_frames_of``),
another customer's stay. Before that, the family's conversations still open on the address are
resolved (``unlink_conversations``): an agent's reply to one would go to whoever holds the
address now; then the replies written before the unlink that have no outcome yet, on any of
the family's conversations on the address, are taken back (``unlink_replies``: failed on the
log, erased from ``RD_OUTBOUND``).

Safe to retry: the log is written first, so a retry after a crash finds the address unlinked
and only finishes the index, the conversations, the replies and the chat history
(``already_unlinked``). A message intake resolved just before the index changed still lands on
this customer: the same window as a link's (a conversation it opened on the address is resolved
by asking again).
"""

from __future__ import annotations

from typing import Any

import structlog

from events.model import IdentityUnlinked
from events.store import ConcurrencyError
from services.customers.erase_report import ErasureTargets
from services.customers.service import CONFLICT_RETRIES, CustomerError, Customers, check_customer_id
from services.customers.unlink_chat import purge_chat_frames
from services.customers.unlink_conversations import on_address, resolve_on_address
from services.customers.unlink_replies import withdraw_replies
from services.identity.addresses import InvalidAddress, mask

log = structlog.get_logger(__name__)

REASON_MAX = 500


async def unlink(
    customers: Customers,
    customer_id: str,
    raw_identity: str,
    actor: str,
    *,
    reason: str = "",
    targets: ErasureTargets | None = None,
) -> dict[str, Any]:
    """Take ``raw_identity`` away from ``customer_id``'s family. 404 when the family never had
    it; 409 for a customer merged into another (unlink from the survivor), or when a conversation
    on the address kept changing (resolving it or taking its replies back); 410 once erased; 503
    when the chat history did not answer (unlinked all the same for both: ask again to finish).
    ``targets``: where the chat connector keeps its history (the defaults otherwise)."""
    check_customer_id(customer_id)
    try:
        identity = customers.directory.parse(raw_identity)
    except InvalidAddress as err:
        raise CustomerError(400, str(err)) from err
    reason = reason.strip()
    if len(reason) > REASON_MAX:
        raise CustomerError(400, f"reason: at most {REASON_MAX} characters")
    await customers.existing(customer_id)
    await customers.not_merged_away(customer_id, "unlink from")
    await customers.not_being_erased(customer_id)
    written, family = await _record_unlinks(customers, customer_id, identity, actor, reason)
    # A mapping still under an earlier form of the address (an email in NFD) or a legacy key is
    # moved to its own key by a lookup, as the next message's would: forget_if sees only that
    # key, and the earlier one gave the address back to the family at its next message.
    await customers.directory.lookup(identity)
    index_cleared = False
    for member in family:
        index_cleared = await customers.directory.forget_if(identity, member) or index_cleared
    # After the index (a message from the address now opens a new customer's conversation, not
    # one of this family's) and before the chat history (a reply to one until then is purged
    # with the family's frames). On every call, so a retry after a crash before this point
    # finishes it; what is resolved already is not resolved again.
    # One read of the family's log names the conversations on the address, open or resolved:
    # both steps below read each one's own subject again when they act on it.
    on_it = await on_address(customers, family, identity)
    resolved = await resolve_on_address(customers, on_it, actor)
    # After the resolutions: a reply command appends only on an open conversation (guarded by
    # its last sequence, a resolution meanwhile is a 409), so no reply is written after this
    # reads the log; taken back first, an agent could reply between the two and that reply went
    # out. A relay sweep between the two only queues again a copy this then erases (the
    # DeliveryFailed goes on the log before RD_OUTBOUND is read: unlink_replies). Before the
    # chat history: a web chat reply its connector took after the purge would land there again.
    withdrawn = await withdraw_replies(customers, on_it)
    # After the index: a message from the address now makes a new customer, whose frames stay.
    # On every call too.
    chat_frames = await purge_chat_frames(customers, family, identity, targets or ErasureTargets())
    log.info(
        "customers.unlinked",
        customer_id=customer_id,
        identity=mask(identity),
        new=bool(written),
        index_cleared=index_cleared,
        conversations_resolved=resolved,
        replies_withdrawn=withdrawn.replies,
        outbound_removed=withdrawn.removed,
        chat_frames_removed=chat_frames,
    )
    return {
        "customer_id": customer_id,
        "identity": identity,
        "unlinked": bool(written),
        "already_unlinked": not written,
        "conversations_resolved": resolved,
        "replies_withdrawn": withdrawn.replies,
    }


async def _record_unlinks(
    customers: Customers, customer_id: str, identity: str, actor: str, reason: str
) -> tuple[int, list[str]]:
    """``IdentityUnlinked`` on every family member whose log gives it ``identity``; how many
    were written (0: unlinked before, a retry) and the family's ids as last read. 404 when no
    member ever had it."""
    written = 0
    for _ in range(CONFLICT_RETRIES):
        family = await customers.family(customer_id)
        holders = [facts for facts in family if identity in facts.identities]
        ids = [facts.customer_id for facts in family]
        if not holders:
            if written or any(identity in facts.unlinked for facts in family):
                return written, ids
            if await customers.directory.lookup(identity) not in ids:
                raise CustomerError(404, f"customer {customer_id} has no address {identity}")
            # Found in rd_identity only (a pointer a merge moved, an address written before the
            # log named every one): the fact goes on the customer's own subject all the same.
            holders = family[:1]
        try:
            for facts in holders:
                event = IdentityUnlinked(
                    at=customers.clock(), customer_id=facts.customer_id, identity=identity, actor=actor, reason=reason
                )
                await customers.append(event, facts.last_seq)
                written += 1
        except ConcurrencyError:
            continue  # a member's subject moved on: read the family again (those written stand)
        return written, ids
    raise CustomerError(409, "the customer changed meanwhile; try again")
