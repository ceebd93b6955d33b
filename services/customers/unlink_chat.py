"""An unlinked web chat address loses the family's frames from its catch-up history (``RD_CHAT``).

The history is kept per address (a visitor or user id), not per customer: left as it was, the
address's next holder saw the earlier customer's messages and replies in the widget, and their
export listed them. ``services.customers.unlink`` calls ``purge_chat_frames`` after the log, the
index and the resolution of the family's conversations open on the address (no agent can reply
to one once this has run; a reply queued before, and the resolved notice, may still land after
it: see the customers README). The frames are told apart as an erasure tells them
(``erase_match.chat_frames_of``: the family's messages by provider message id, its replies by
reply id, its conversations' ``closed`` notices), so a frame another customer wrote on the
address stays. Each goes by sequence with JetStream's secure erase (``ChatHistory.erase``), as
an erasure's do.

Running it again removes nothing more, so the unlink runs it on every call, a retry included.
No history stream (the chat connector is not deployed) is no frame to remove.
"""

from __future__ import annotations

from connectors.chat.history import ChatHistory, HistoryUnavailable
from services.customers.erase_match import Family, chat_frames_of
from services.customers.erase_report import ErasureTargets
from services.customers.service import CustomerError, Customers


def chat_address(identity: str) -> str | None:
    """The history address of a ``chat:`` identity (as the erasure reads it); None otherwise."""
    kind, _, address = identity.partition(":")
    return address if kind == "chat" and address else None


async def purge_chat_frames(customers: Customers, ids: list[str], identity: str, targets: ErasureTargets) -> int:
    """Remove the frames of the family ``ids`` from ``identity``'s chat history; how many went
    (0 for an address of another kind, an empty history or no history stream). 503 when the
    stream does not answer: the unlink stands, and asking again finishes this."""
    address = chat_address(identity)
    if address is None:
        return 0
    history = ChatHistory(stream=targets.chat_stream, prefix=targets.chat_subject, js=customers.store.js)
    try:
        # No frame (or no stream: get_last_msg answers "not found" for both): the family's log
        # need not be read.
        if await history.last_seq(address) == 0:
            return 0
        family = Family(ids=list(ids))
        for member in ids:
            for stored in await customers.store.read_customer_direct(member):
                family.note(stored.event)
        return await history.erase(address, only=chat_frames_of(family, address))
    except HistoryUnavailable as err:
        raise CustomerError(
            503, f"the address was unlinked, but its web chat history did not answer ({err}): ask again to finish"
        ) from err
