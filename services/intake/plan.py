"""What intake appends for one inbound message, decided from the customer's history alone.

Pure: no I/O, no clock. The shell (``services.intake``) reads the history, calls ``plan``
and appends the result; on a concurrency conflict it reads again and plans again, so the
plan must be correct for any history, including one a crashed earlier attempt left half
written: the plan for a message is a fixed sequence of steps (customer created, conversation
opened, message received, routing requested), appended one at a time, and a crash may stop
after any of them. Planning again for the same message (its redelivery) then yields exactly
the steps still missing: the conversation the message opened is found by the message's id
(``ConversationOpened.provider_message_id``), and a message already received whose open
conversation never had its routing requested gets that request now. Automatic mail is never
routed, and a conversation resolved since is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

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
    CustomerProfileUpdated,
    CustomersMerged,
    InboundMessage,
    LogEvent,
    MessageReceived,
    MessageSent,
    OfferDeclined,
    OfferExpired,
    Requirements,
    RoutingRequested,
)
from events.store import StoredEvent
from services.intake.language import CORRECTION_CONFIDENCE, LanguageDecision, priors_for

# The conversation's latest messages a language decision reads (a long chat costs no more).
LANGUAGE_TEXTS = 10
# ``ConversationReleased.reason`` of a call handed back because the agent's phone did not answer.
CALL_NOT_ANSWERED = "call_not_answered"

if TYPE_CHECKING:
    from services.intake.language import LanguageDetector


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


@dataclass(frozen=True)
class Triage:
    """What intake worked out about the message before planning."""

    identity: str
    language: str
    skills: dict[str, int]
    priority: int


def new_id(prefix: str) -> str:
    # 20 random hex digits, as ``uuid4().hex[:20]`` gave, without building a UUID.
    return f"{prefix}_{os.urandom(10).hex()}"


def plan(
    history: CustomerHistory,
    customer_id: str,
    message: InboundMessage,
    triage: Triage,
    now: datetime,
    make_id: Callable[[str], str] = new_id,
    *,
    language: LanguageDetector | None = None,
) -> list[LogEvent]:
    """The events to append, in order; empty when the message was already recorded whole.

    For a message recorded in part (a crash between two appends), only what is missing.
    ``language``: decide the conversation's language from all the evidence (the text of its
    messages, the customer's profile and earlier conversations, the sender's country, the
    connector's locales); without it, the profile's language or else ``triage.language``."""
    automatic = is_automatic(message)
    if (message.channel, message.provider_message_id) in history.seen:
        return _completion(history, customer_id, message, triage, now, automatic, language)
    # A conversation this message opened before a crash cut its recording short comes
    # first: for mail without thread evidence nothing else would find it again.
    conv = history.opened_by(message) or _continued(history, message)
    if automatic and conv is None:
        return []  # out-of-office, bulk, bounce: recorded only inside a thread, never routed
    events: list[LogEvent] = []
    if not history.created:
        events.append(CustomerCreated(at=now, customer_id=customer_id, identity=triage.identity))
    if conv is not None:
        # A conversation the merged-away customer opened stays on its own subjects.
        customer_id = conv.customer_id or customer_id
    else:
        conv = OpenConversation(make_id("cv"), message.channel, message.public)
        events.append(
            ConversationOpened(
                at=now,
                customer_id=customer_id,
                conversation_id=conv.conversation_id,
                channel=message.channel,
                contact=message.sender,
                public=message.public,
                provider_message_id=message.provider_message_id,
            )
        )
    events.append(
        MessageReceived(
            at=message.at,
            customer_id=customer_id,
            conversation_id=conv.conversation_id,
            channel=message.channel,
            message_id=make_id("msg"),
            provider_message_id=message.provider_message_id,
            text=message.text,
            language=triage.language,
            attachments=message.attachments,
            # Where a reply must go (page, phone-number id, email thread) is the provider's
            # business: kept as given, handed back to the connector with each reply. The
            # sender's display name (email From, WhatsApp profile) is kept for the console.
            metadata=_with_sender_name(message),
            contact=message.sender,  # where the reply to this message goes (services.api.replies)
        )
    )
    if not conv.routing_requested and not automatic:
        events.append(_routing(history, customer_id, conv.conversation_id, message, triage, now, language))
    elif not automatic:
        events.extend(_correction(history, customer_id, conv.conversation_id, message, now, language, unseen=True))
    released = message.metadata.get("releases", "")
    if released and released == conv.holder and _same_call(conv, message):
        # connectors.voice: the agent did not answer the call (or it could not be put through
        # to her): it waits again, without her, as after an offer she declined (until 2026-12-07
        # this was a transfer away from her, which reports counted and which sent a third
        # unanswered ring to a specialist).
        events.append(
            ConversationReleased(
                at=message.at,
                customer_id=customer_id,
                conversation_id=conv.conversation_id,
                agent_id=released,
                reason=CALL_NOT_ANSWERED,
                declined=True,
            )
        )
    # The caller's call ended while an agent held it (her phone rang, or she never picked up):
    # nobody is left to put through, so it ends, abandoned. A caller who hung up while waiting
    # in the queue stays waiting: the next free agent calls them back (callbacks placed).
    ends = message.metadata.get("ends_call") == "1" and bool(conv.holder) and not _kept(conv, message)
    if (message.metadata.get("resolves") == "1" or ends) and _same_call(conv, message):
        # A fact that ends the conversation (connectors.voice: the call with the agent ended).
        events.append(
            ConversationResolved(
                at=message.at,
                customer_id=customer_id,
                conversation_id=conv.conversation_id,
                actor=f"connector:{message.channel}",
            )
        )
    return events


def _with_sender_name(message: InboundMessage) -> dict[str, str]:
    """The message's metadata, with ``sender_name`` (sealed like the rest) when the connector heard one."""
    metadata = dict(message.metadata)
    if message.sender_name and "sender_name" not in metadata:
        metadata["sender_name"] = message.sender_name[:200]
    return metadata


def _kept(conv: OpenConversation, message: InboundMessage) -> bool:
    """The caller asked for a callback or left a voicemail on this call: an agent still owes
    them a call, so the end of theirs does not resolve the conversation."""
    call = message.metadata.get("call_sid", "")
    return any(pmid in (f"{call}:callback", f"{call}:voicemail") or pmid.startswith("RE") for pmid in conv.keeping)


def _keeps_open(pmid: str) -> bool:
    """A callback request (``<CallSid>:callback``) or a voicemail (``<CallSid>:voicemail``, or
    its recording ``RE…``): the ids connectors.voice gives them (metadata is sealed on the log)."""
    return pmid.endswith((":callback", ":voicemail")) or pmid.startswith("RE")


def _same_call(conv: OpenConversation, message: InboundMessage) -> bool:
    """A call's end resolves the conversation that call opened, not the caller's current one
    (a late status of an earlier call, or of a call that never reached an agent)."""
    call = message.metadata.get("call_sid", "")
    return not conv.opened_by or not call or conv.opened_by == call


def _continued(history: CustomerHistory, message: InboundMessage) -> OpenConversation | None:
    if message.channel == "email":
        # Mail threads: a new mail without thread evidence is a new conversation.
        return history.threaded(message)
    return history.open_on(message.channel, message.public, message.sender)


def _completion(
    history: CustomerHistory,
    customer_id: str,
    message: InboundMessage,
    triage: Triage,
    now: datetime,
    automatic: bool,
    language: LanguageDetector | None = None,
) -> list[LogEvent]:
    """The steps after ``MessageReceived`` that a crash may have left out: the routing
    request of the conversation the message was received in, while that conversation is
    still open (one resolved since is not routed again) and unless the mail was automatic."""
    conv = history.open.get(history.received_in.get((message.channel, message.provider_message_id), ""))
    if conv is None or automatic:
        return []
    owner = conv.customer_id or customer_id
    if conv.routing_requested:
        # A language change the message called for, unless it was recorded (or overtaken).
        return _correction(history, owner, conv.conversation_id, message, now, language, unseen=False)
    return [_routing(history, owner, conv.conversation_id, message, triage, now, language)]


def _routing(
    history: CustomerHistory,
    customer_id: str,
    conversation_id: str,
    message: InboundMessage,
    triage: Triage,
    now: datetime,
    language: LanguageDetector | None = None,
) -> RoutingRequested:
    decision = _decide(history, conversation_id, message, language) if language is not None else None
    return RoutingRequested(
        at=now,
        customer_id=customer_id,
        conversation_id=conversation_id,
        channel=message.channel,
        requirements=Requirements(
            skills=triage.skills,
            language=decision.language if decision else history.preferred_language or triage.language,
            priority=triage.priority,
        ),
        language_reason=decision.reason() if decision else None,
    )


def _decide(
    history: CustomerHistory,
    conversation_id: str,
    message: InboundMessage,
    language: LanguageDetector,
) -> LanguageDecision:
    """The conversation's language from all its customer messages so far (this one included)
    and the priors; a language the customer chose (``metadata.language``, the voice menu) as is."""
    chosen = message.metadata.get("language")
    if chosen:
        return LanguageDecision(chosen, 1.0, {}, chosen=True)
    texts = list(history.texts.get(conversation_id, []))
    if (message.channel, message.provider_message_id) not in history.seen:
        texts.append(message.text)
    texts = texts[-LANGUAGE_TEXTS:]
    earlier = [lang for conv_id, lang in history.languages.items() if conv_id != conversation_id]
    priors = priors_for(
        message, language.languages, preferred_language=history.preferred_language, earlier_languages=earlier
    )
    return language.decide(texts, priors)


def _correction(
    history: CustomerHistory,
    customer_id: str,
    conversation_id: str,
    message: InboundMessage,
    now: datetime,
    language: LanguageDetector | None,
    *,
    unseen: bool,
) -> list[LogEvent]:
    """``ConversationLanguageChanged`` when this later message is confidently another language
    than the conversation's, and all the evidence agrees; else nothing. ``unseen``: the
    message is not in the history yet. On a redelivery, only if the message is still the
    conversation's latest (a later one decided since)."""
    current = history.languages.get(conversation_id)
    if language is None or not current or message.metadata.get("language") or not message.text.strip():
        return []
    texts = history.texts.get(conversation_id, [])
    if not unseen and (not texts or texts[-1] != message.text):
        return []
    decision = _decide(history, conversation_id, message, language)
    latest = language.text_scores(message.text)
    if decision.language == current or latest.get(decision.language, 0.0) < CORRECTION_CONFIDENCE:
        return []
    return [
        ConversationLanguageChanged(
            at=now,
            customer_id=customer_id,
            conversation_id=conversation_id,
            language=decision.language,
            previous=current,
            reason=decision.reason(),
        )
    ]


def is_automatic(message: InboundMessage) -> bool:
    """Mail no person wrote (RFC 3834 auto-replies, bulk, bounces), flagged by the connector."""
    return bool(message.metadata.get("auto"))


def customer_guard(customer_id: str) -> str:
    return subjects.customer_filter(customer_id)
