"""A customer's history as intake plans from it: what is open, what was seen, what it said.

``fold_history`` folds the events of a customer (and of the customers merged into it) into a
``CustomerHistory``: the conversations open (``OpenConversation``), the provider messages
already received and where, the threads an email reply finds its conversation by, and the
latest texts and languages of each conversation. Pure: no I/O, no clock. ``services.intake.plan``
plans from it; ``services.intake.histories`` keeps histories and folds on (``fold_into``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from events import subjects
from events.model import (
    AgentOffered,
    ConversationAssigned,
    ConversationEscalated,
    ConversationLanguageChanged,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    CustomerCreated,
    CustomerErased,
    CustomerProfileUpdated,
    CustomersMerged,
    InboundMessage,
    MessageReceived,
    MessageSent,
    OfferDeclined,
    OfferExpired,
    RoutingRequested,
)
from events.store import StoredEvent

# The conversation's latest messages a language decision reads (a long chat costs no more).
LANGUAGE_TEXTS = 10


@dataclass
class OpenConversation:
    conversation_id: str
    channel: str
    public: bool
    routing_requested: bool = False
    # Whose subject the conversation lives on: after a merge, a conversation the merged
    # customer opened goes on there (empty: the customer being planned for).
    customer_id: str = ""
    contact: str = ""  # the address the customer wrote from
    opened_by: str = ""  # the provider message id that opened it (empty on older events)
    holder: str = ""  # the agent offered it or holding it now (connectors.voice hands a call back)
    # The callback requests and voicemails received in it, by provider message id (connectors.voice:
    # either keeps the conversation open after the caller's call ended).
    keeping: list[str] = field(default_factory=list)


@dataclass
class CustomerHistory:
    last_seq: int = 0
    # The last sequence per customer of the family (the customer and those merged into it):
    # the expected sequence for an append guarded by that customer's subjects.
    seqs: dict[str, int] = field(default_factory=dict)
    # Customers merged into the ones folded (``CustomersMerged.merged_id``): their histories
    # belong to this one (intake reads them too).
    merged: set[str] = field(default_factory=set)
    created: bool = False
    # A ``CustomerErased`` stands in the family: the person is gone for good, and a message
    # from one of their addresses starts a new customer (``services.intake.consumer``).
    erased: bool = False
    preferred_language: str | None = None
    seen: set[tuple[str, str]] = field(default_factory=set)
    # (channel, provider message id) → the conversation the message was received in.
    received_in: dict[tuple[str, str], str] = field(default_factory=dict)
    open: dict[str, OpenConversation] = field(default_factory=dict)
    # Provider message ids (ours and the customer's) → the conversation they belong to:
    # how an email reply finds its thread.
    threads: dict[str, str] = field(default_factory=dict)
    # conversation id → the customer's message texts, oldest first, and the language its
    # routing asked for (``RoutingRequested``, then ``ConversationLanguageChanged``).
    texts: dict[str, list[str]] = field(default_factory=dict)
    languages: dict[str, str] = field(default_factory=dict)

    def open_on(self, channel: str, public: bool, contact: str | None = None) -> OpenConversation | None:
        """The open conversation on ``channel``; after a merge there may be several (one per
        customer of the family): the one with the same contact address first."""
        found = [c for c in self.open.values() if c.channel == channel and c.public == public]
        for conv in found:
            if contact is not None and conv.contact == contact:
                return conv
        return found[0] if found else None

    def opened_by(self, message: InboundMessage) -> OpenConversation | None:
        """The open conversation this very message opened (a crash cut its recording short)."""
        for conv in self.open.values():
            if conv.opened_by and conv.opened_by == message.provider_message_id and conv.channel == message.channel:
                return conv
        return None

    def threaded(self, message: InboundMessage) -> OpenConversation | None:
        """The open conversation this message replies to, by thread evidence only: the
        parent id, then References (last to first), then the reply-to token, then the
        subject tag. Tokens and tags name a conversation; they count only when it is this
        customer's (a token is not proof of identity)."""
        meta = message.metadata
        refs = [message.thread_ref or "", *reversed(meta.get("references", "").split())]
        for ref in refs:
            conv = self.open.get(self.threads.get(ref.strip(), ""))
            if ref and conv is not None:
                return conv
        for key in ("thread_token", "subject_tag"):
            conv = self.open.get(meta.get(key, ""))
            if conv is not None:
                return conv
        return None


def fold_history(events: Sequence[StoredEvent], customer_id: str | None = None) -> CustomerHistory:
    """Fold a customer's history; after a merge, the histories of the customers merged into
    it too (``customer_id`` names the survivor: only its own profile counts)."""
    return fold_into(CustomerHistory(), events, customer_id)


def fold_into(h: CustomerHistory, events: Sequence[StoredEvent], customer_id: str | None = None) -> CustomerHistory:
    """Fold more of a history into ``h`` (``services.intake.histories`` reads on from where it
    read). Each customer's events must come after those of the same customer folded before;
    across the customers of a family the order does not matter: what each event changes is
    its customer's or its conversation's, and a conversation lives on one customer's
    subjects. Keeps what a plan reads, no more: a conversation's last ``LANGUAGE_TEXTS``
    texts while it is open."""
    for stored in sorted(events, key=lambda s: s.seq):
        h.last_seq = max(h.last_seq, stored.seq)
        e = stored.event
        owner = getattr(e, "customer_id", None)
        if not isinstance(owner, str):
            # A newer version's event (or an undecodable one) names no customer in a way we
            # read: its subject says whose it is, and it still moves that expected sequence.
            parsed = subjects.parse_conversation_subject(stored.subject)
            owner = parsed[0] if parsed else None
        if isinstance(owner, str):
            h.seqs[owner] = max(h.seqs.get(owner, 0), stored.seq)
        if isinstance(e, CustomerCreated):
            h.created = True
        elif isinstance(e, CustomersMerged):
            h.merged.add(e.merged_id)
        elif isinstance(e, CustomerErased):
            h.erased = True
        elif isinstance(e, CustomerProfileUpdated):
            if customer_id is None or e.customer_id == customer_id:
                h.preferred_language = e.preferred_language or h.preferred_language
        elif isinstance(e, ConversationOpened):
            h.open[e.conversation_id] = OpenConversation(
                e.conversation_id, e.channel, e.public, False, e.customer_id, e.contact, e.provider_message_id
            )
        elif isinstance(e, MessageReceived):
            h.seen.add((e.channel, e.provider_message_id))
            h.received_in[(e.channel, e.provider_message_id)] = e.conversation_id
            h.threads[e.provider_message_id] = e.conversation_id
            if e.channel == "voice" and e.conversation_id in h.open and _keeps_open(e.provider_message_id):
                h.open[e.conversation_id].keeping.append(e.provider_message_id)
            texts = h.texts.setdefault(e.conversation_id, [])
            texts.append(e.text)
            if len(texts) > LANGUAGE_TEXTS:
                del texts[0]
        elif isinstance(e, MessageSent):
            if e.provider_message_id:
                h.threads[e.provider_message_id] = e.conversation_id
        elif isinstance(e, RoutingRequested):
            if e.conversation_id in h.open:
                h.open[e.conversation_id].routing_requested = True
            if e.requirements.language:
                h.languages[e.conversation_id] = e.requirements.language
        elif isinstance(e, ConversationLanguageChanged):
            h.languages[e.conversation_id] = e.language
        elif isinstance(e, AgentOffered | ConversationAssigned):
            if e.conversation_id in h.open:
                h.open[e.conversation_id].holder = e.agent_id
        elif isinstance(e, OfferDeclined | OfferExpired | ConversationReleased):
            conv = h.open.get(e.conversation_id)
            if conv is not None and conv.holder == e.agent_id:
                conv.holder = ""
        elif isinstance(e, ConversationTransferred | ConversationEscalated):
            if e.conversation_id in h.open:
                h.open[e.conversation_id].holder = ""
        elif isinstance(e, ConversationResolved):
            h.open.pop(e.conversation_id, None)
            h.texts.pop(e.conversation_id, None)
    return h


def _keeps_open(pmid: str) -> bool:
    """A callback request (``<CallSid>:callback``) or a voicemail (``<CallSid>:voicemail``, or
    its recording ``RE…``): the ids connectors.voice gives them (metadata is sealed on the log)."""
    return pmid.endswith((":callback", ":voicemail")) or pmid.startswith("RE")
