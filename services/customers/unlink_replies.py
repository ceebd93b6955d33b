"""An unlinked address's unsent replies are taken back (``DeliveryFailed``, ``RD_OUTBOUND``).

Resolving the conversations on the address (``unlink_conversations``) stops new replies, not the
ones an agent wrote before: a reply with no outcome yet waits in ``RD_OUTBOUND`` (a
``DeliverReply`` on ``rd.out.<channel>``) or is queued again by the API's reply relay
(``services.api.replies``: a ``ReplyRequested`` with no ``MessageSent``/``DeliveryFailed`` after
``requeue_after``), and went out to whoever holds the address now. ``services.customers.unlink``
calls ``withdraw_replies`` after the resolutions: for each of the family's conversations on the
address (open or resolved, as ``unlink_conversations.on_address`` decides), every reply with no
outcome on the log gets ``DeliveryFailed`` with ``UNLINKED_REASON`` (the relay then forgets it,
a retried reply command does not queue it again, and the console shows it failed with that
reason), and its ``DeliverReply`` messages still in ``RD_OUTBOUND`` are securely erased, as an
erasure erases a customer's queued replies (``erase.Eraser._queued_replies``), matched by the
reply and conversation ids the message carries in clear: nothing personal is opened. So are
the closing notices queued for those conversations (an agent resolved one just before).

Decided on the conversation's log read as stored, appended guarded by its last sequence
(``ConcurrencyError``: read again): a reply whose outcome appeared meanwhile (sent, failed)
gets none, and none gets two. Running it again writes nothing more; it still erases from
``RD_OUTBOUND`` what carries a reply this unlink failed before, so a retry after a crash
between the two steps, or a copy queued late (below), finishes the job.

A reply a connector has already fetched from ``RD_OUTBOUND`` hears of the erase (the server's
advisory of a held command deleted: ``connectors.sdk.withdrawals``) and is not tried again, also
through a provider's outage; only a try already under way then still reaches the provider, and
its ``MessageSent`` follows the ``DeliveryFailed`` on the log. A reply the API appended
just before the resolution and queued only after this read ``RD_OUTBOUND`` (its two writes), or
one a relay sweep found without an outcome just before the ``DeliveryFailed`` and queued after
the read, waits there: asking again removes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import structlog
from nats.js import JetStreamContext

from events import subjects
from events.model import DeliveryFailed, MessageSent, ReplyRequested
from events.msg_get import stored_messages
from events.skips import count_skip
from events.store import Append, ConcurrencyError, EventStore, StoredEvent
from services.customers.scan import erase_msg
from services.customers.service import CONFLICT_RETRIES, CustomerError, Customers
from services.customers.unlink_conversations import ConversationOnAddress

log = structlog.get_logger(__name__)

UNLINKED_REASON = "the address was unlinked from the customer"


class _Queued(msgspec.Struct):
    """What a ``DeliverReply`` says in clear (its contact, text and metadata may be sealed)."""

    reply_id: str = ""
    conversation_id: str = ""
    notice: str = ""


@dataclass
class Withdrawn:
    replies: int = 0  # DeliveryFailed written by this call
    removed: int = 0  # DeliverReply messages erased from RD_OUTBOUND by this call
    # reply id -> conversation id: failed by this call or by an earlier unlink (still erased).
    taken: dict[str, str] = field(default_factory=dict)


async def withdraw_replies(customers: Customers, on_it: list[ConversationOnAddress]) -> Withdrawn:
    """Take back the unsent replies of the conversations ``on_it`` (``on_address``: each one's
    own subject is read now). 409 when one kept changing (unlinked all the same: ask again)."""
    store = customers.store
    # Only ids and kinds count here: read as stored, nothing to open.
    as_stored = EventStore(store.nc, store.js, reader=store.reader, quarantine=store.quarantine)
    out = Withdrawn()
    for conv in on_it:
        out.replies += await _fail_unsent(customers, as_stored, conv.owner, conv.opened.conversation_id, out.taken)
    # After the DeliveryFailed, never before: from then on the relay sees the outcome and does
    # not queue the reply again, so an erased message cannot come back from it (erased first, a
    # sweep in between queued it again, and after a NATS restart RD_OUTBOUND no longer drops the
    # copy as a duplicate). A crash in between leaves the message: the next call erases it.
    # A closing notice queued for one of them (an agent resolved it just before) would store
    # its "conversation ended" in the address's web chat history after the purge: erased too.
    notices_for = {conv.opened.conversation_id for conv in on_it}
    if out.taken or notices_for:
        out.removed = await _erase_queued(store.js, out.taken, notices_for)
    return out


async def _fail_unsent(customers: Customers, as_stored: EventStore, owner: str, cid: str, taken: dict[str, str]) -> int:
    """``DeliveryFailed`` for each reply of the conversation without an outcome; how many were
    written. Adds to ``taken`` every reply failed for the unlink, now or before."""
    subject = subjects.conversation(owner, cid)
    written = 0
    for _ in range(CONFLICT_RETRIES):
        events = await as_stored.read_direct(subject)
        unsent, failed_before = _unsent(events)
        taken.update(dict.fromkeys(failed_before, cid))
        expected = events[-1].seq if events else 0
        try:
            # Newest first: the relay holds a conversation's later reply back until the earlier
            # ones have an outcome, and queues it the moment they do. Failing the earliest first
            # let the relay queue the next one before its own DeliveryFailed was on the log.
            for reply in reversed(unsent):
                event = DeliveryFailed(
                    at=customers.clock(),
                    customer_id=owner,
                    conversation_id=cid,
                    channel=reply.channel,
                    reply_id=reply.reply_id,
                    reason=UNLINKED_REASON,
                )
                expected = await customers.store.append(Append(event, expected=expected))
                written += 1
                taken[reply.reply_id] = cid
        except ConcurrencyError:
            continue  # an outcome, a message or a note meanwhile: read it again (those written stand)
        return written
    log.warning("customers.unlink_replies_left", customer_id=owner, conversation_id=cid, withdrawn=written)
    count_skip("customers.unlink_withdraw")
    raise CustomerError(
        409, f"the address was unlinked, but conversation {cid} on it kept changing: ask again to take its replies back"
    )


def _unsent(events: list[StoredEvent]) -> tuple[list[ReplyRequested], list[str]]:
    """The conversation's replies with no outcome, in the log's order, and the ids of those an
    unlink failed before."""
    requested: dict[str, ReplyRequested] = {}
    outcomes: set[str] = set()
    failed_before: list[str] = []
    for stored in events:
        event = stored.event
        if isinstance(event, ReplyRequested):
            requested.setdefault(event.reply_id, event)
        elif isinstance(event, MessageSent | DeliveryFailed):
            outcomes.add(event.reply_id)
            if isinstance(event, DeliveryFailed) and event.reason == UNLINKED_REASON:
                failed_before.append(event.reply_id)
    return [reply for rid, reply in requested.items() if rid not in outcomes], failed_before


async def _erase_queued(js: JetStreamContext, taken: dict[str, str], notices_for: set[str]) -> int:
    """Securely erase the ``DeliverReply`` messages in ``RD_OUTBOUND`` of the ``taken`` replies,
    and the notices queued for the conversations ``notices_for``."""
    stream = subjects.OUTBOUND_STREAM
    erased = 0
    async for seq, data in stored_messages(js, stream, subjects.OUTBOUND_ALL):
        try:
            queued = msgspec.json.decode(data, type=_Queued)
        except msgspec.DecodeError:  # not a reply a connector could read either: not one of these
            continue
        if (queued.reply_id in taken and taken[queued.reply_id] == queued.conversation_id) or (
            queued.notice and queued.conversation_id in notices_for
        ):
            erased += await erase_msg(js, stream, seq)
    return erased
