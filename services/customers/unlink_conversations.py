"""An unlinked address's open conversations are resolved (``ConversationResolved``).

A number that passed to someone else kept the customer's conversation on it open: an agent's
next reply went to the address, i.e. to its new holder. ``services.customers.unlink`` calls
``resolve_on_address`` after the log and the index: every conversation of the family still
open *on the address* is resolved with the unlinker as ``actor`` (no ``agent_id``: nobody
resolved it by hand, so the router frees its agent at once, without a wrap-up). From then on a
reply to it is refused as to any resolved conversation (409), and the customer's next message
from an address still theirs opens a new one.

A conversation is on the address when it was opened on it (``ConversationOpened``'s channel and
contact, with the platform of its opening) or when its replies go to it now (the address of its
last customer message, as ``services.api.reply_routing.route_of`` picks it): the address formed as
intake forms a sender's identity (``services.identity.addresses.identity_for``, the directory's rules).
A conversation the customer moved onto another address of theirs (a linked number, a merged
customer's) is thus resolved when it was opened on this one: a voice callback dials the
opening's number.

Decided on the log as read, appended guarded by the conversation subject's last sequence
(``ConcurrencyError``: read again), as the erasure resolves (``erase.Eraser._resolve_open``): one
resolved meanwhile (an agent, a retry running at once) gets nothing more. So running it again
resolves nothing twice, and the unlink runs it on every call, a retry included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from events import subjects
from events.model import ConversationOpened, ConversationResolved, MessageReceived
from events.skips import count_skip
from events.store import Append, ConcurrencyError, EventStore
from services.customers.service import CONFLICT_RETRIES, CustomerError, Customers
from services.identity.addresses import IdentityRules, InvalidAddress, identity_for

log = structlog.get_logger(__name__)


@dataclass
class ConversationOnAddress:
    owner: str
    opened: ConversationOpened
    messages: list[MessageReceived] = field(default_factory=list)
    resolved: bool = False  # as the family's logs said when read

    def addresses(self, rules: IdentityRules) -> set[str]:
        """The identities it is on: its opening's, and its reply route's."""
        opened = self.opened
        said = [m for m in self.messages if not m.metadata.get("auto")]
        # An intake-opened conversation names no platform: its first message does (WhatsApp
        # on the social channel is a phone number).
        first = said[0].metadata.get("platform") if said else None
        found = {_identity(opened.channel, opened.contact, opened.metadata.get("platform") or first, rules)}
        if said:
            last = said[-1]
            found.add(_identity(last.channel, last.contact or opened.contact, last.metadata.get("platform"), rules))
        return {identity for identity in found if identity is not None}


def _identity(channel: str, contact: str, platform: str | None, rules: IdentityRules) -> str | None:
    try:
        return identity_for(channel, contact, platform=platform, rules=rules)
    except InvalidAddress:  # an erased contact, an address no rule reads: not this one
        return None


async def on_address(customers: Customers, ids: list[str], identity: str) -> list[ConversationOnAddress]:
    """The family's conversations on ``identity``, open or resolved (``ConversationOnAddress.resolved``),
    from the members' logs, opened: ``unlink_replies`` takes back the replies of either."""
    conversations: dict[str, ConversationOnAddress] = {}
    resolved: set[str] = set()
    for member in ids:
        for stored in await customers.store.read_customer_direct(member):
            event = stored.event
            if isinstance(event, ConversationOpened):
                conversations.setdefault(event.conversation_id, ConversationOnAddress(event.customer_id, event))
            elif isinstance(event, MessageReceived) and event.conversation_id in conversations:
                conversations[event.conversation_id].messages.append(event)
            elif isinstance(event, ConversationResolved):
                resolved.add(event.conversation_id)
    rules = customers.directory.rules
    found = [conv for _, conv in sorted(conversations.items()) if identity in conv.addresses(rules)]
    for conv in found:
        conv.resolved = conv.opened.conversation_id in resolved
    return found


async def resolve_on_address(customers: Customers, on_it: list[ConversationOnAddress], actor: str) -> int:
    """Resolve those of ``on_it`` (``on_address``) still open; how many were resolved now. 409
    when one kept changing (the address is unlinked all the same: asking again resolves it)."""
    store = customers.store
    # Only the kinds of events count here: read as stored, nothing to open.
    as_stored = EventStore(store.nc, store.js, reader=store.reader, quarantine=store.quarantine)
    resolved = 0
    for conv in (conv for conv in on_it if not conv.resolved):
        cid = conv.opened.conversation_id
        subject = subjects.conversation(conv.owner, cid)
        # Marked: the API's closing notice (``services.api.closings``) would go to the address,
        # i.e. to its next holder, and could land in its chat history after the unlink's purge.
        event = ConversationResolved(
            at=customers.clock(), customer_id=conv.owner, conversation_id=cid, actor=actor, address_unlinked=True
        )
        for _ in range(CONFLICT_RETRIES):
            events = await as_stored.read_direct(subject)
            if any(isinstance(s.event, ConversationResolved) for s in events):
                break  # resolved meanwhile (an agent, this unlink asked again at once)
            try:
                await store.append(Append(event, expected=events[-1].seq if events else 0))
            except ConcurrencyError:
                continue  # a message or an answer was recorded meanwhile: read it again
            resolved += 1
            break
        else:
            log.warning("customers.unlink_conversation_left_open", customer_id=conv.owner, conversation_id=cid)
            count_skip("customers.unlink_resolve")
            raise CustomerError(
                409, f"the address was unlinked, but conversation {cid} on it kept changing: ask again to resolve it"
            )
    return resolved
