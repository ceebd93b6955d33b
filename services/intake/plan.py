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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from events import subjects
from events.model import (
    ConversationLanguageChanged,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    CustomerCreated,
    InboundMessage,
    LogEvent,
    MessageReceived,
    Requirements,
    RoutingRequested,
)
from services.intake.customer_history import LANGUAGE_TEXTS, CustomerHistory, OpenConversation
from services.intake.language import CORRECTION_CONFIDENCE, LanguageDecision, priors_for

# How far a connector's ``InboundMessage.at`` may stand from the time JetStream stored the
# message and still be taken as when it was received: a connector publishes within seconds of
# hearing a message (its provider is answered only after the ack), so beyond this the time is
# a provider's (an SDK connector passing one on) or a clock that stepped.
RECEIVED_SKEW = timedelta(minutes=5)

# ``ConversationReleased.reason`` of a call handed back because the agent's phone did not answer.
CALL_NOT_ANSWERED = "call_not_answered"

if TYPE_CHECKING:
    from services.intake.language import LanguageDetector


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
    stored: datetime | None = None,
) -> list[LogEvent]:
    """The events to append, in order; empty when the message was already recorded whole.

    ``stored``: when JetStream stored the message on ``rd.inbound`` (its delivery's timestamp),
    which bounds the time it is recorded as received (``received_at``).

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
    received = received_at(message, now, stored)
    events.append(
        MessageReceived(
            at=received,
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
                at=received,
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
                at=received,
                customer_id=customer_id,
                conversation_id=conv.conversation_id,
                actor=f"connector:{message.channel}",
            )
        )
    return events


def received_at(message: InboundMessage, now: datetime, stored: datetime | None = None) -> datetime:
    """When Relaydesk received the message: what orders, retains (the day key of
    ``[retention] message_days``) and measures it (first response times). The connector's
    ``at`` (when it heard the message) unless it stands more than ``RECEIVED_SKEW`` from when
    JetStream stored it (then that), and never after ``now``. A provider's time is metadata:
    a connector that passed one on as ``at`` (1970, 2099, a retried webhook's) dated the message
    by it, so it expired at once, was kept past retention, or measured a reply 56 years late."""
    at = message.at
    if stored is not None and not stored - RECEIVED_SKEW <= at <= stored + RECEIVED_SKEW:
        at = stored
    return min(at, now)


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
