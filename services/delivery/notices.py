"""From log facts to notices for agents: what happened, for whom, with what to show.

``Facts`` folds the log (the router's own ``evolve`` plus the little a notification adds:
the customer's masked address and the first lines of their last message) and turns each
new fact into notices: ``offer`` (AgentOffered), ``assigned`` (ConversationAssigned),
``message`` (a customer wrote again on a conversation an agent holds; automatic mail such as
an out-of-office is not a customer writing), ``offer_expired``,
``released``. ``Holders`` is the light version the live stream uses to know which agent an
event concerns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import structlog

from events import subjects
from events.digests import remembered
from events.model import (
    AgentOffered,
    AgentProfileUpdated,
    AgentStatusChanged,
    AgentTokenIssued,
    AgentTokenRevoked,
    ConversationAssigned,
    ConversationEscalated,
    ConversationOpened,
    ConversationReleased,
    ConversationResolved,
    ConversationTransferred,
    MessageReceived,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    ReplyRequested,
)
from events.personal import ERASED
from events.skips import count_skip
from events.store import StoredEvent
from events.text import shorten
from router import replays
from router.fold import evolve
from router.state import RouterState, reading_only
from services.delivery.pacing import MessagePacing

log = structlog.get_logger(__name__)
# Where a notice for an id no agent can have is counted (``relaydesk_skipped_total``).
UNADDRESSED = "delivery.notice_for_nobody"


@dataclass(frozen=True)
class Notice:
    agent_id: str
    kind: str
    seq: int
    conversation_id: str
    customer_id: str
    body: dict[str, Any]


def mask_contact(contact: str) -> str:
    """Enough to recognise, not enough to use: ``+1555•••4567``, ``j•••@example.com``. An
    erased contact stays ``[erased]`` (found by a docs audit: it was masked as an address,
    ``[era•••sed]``, in the notices of an erased customer's conversation)."""
    if contact == ERASED:
        return contact
    if "@" in contact:
        local, _, domain = contact.partition("@")
        return f"{local[:1]}•••@{domain}"
    if len(contact) <= 6:
        return "•••"
    return f"{contact[:4]}•••{contact[-4:]}"


def preview(text: str, lines: int, limit: int = 300) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()][:lines]
    out = "\n".join(kept)
    return shorten(out, limit)


class Facts:
    def __init__(self, *, console_url: str, api_url: str, preview_lines: int = 3) -> None:
        self.state = reading_only(RouterState())  # facts only: delivery never decides
        self.previews: dict[str, str] = {}
        self.contacts: dict[str, str] = {}
        self.subjects: dict[str, str] = {}  # the first email subject (email notices only: senders.py)
        # The digests of each open conversation's customer messages (``events.digests``): the
        # router remembers no messages (``router.replays``), so a re-published one is told here once.
        self.heard: dict[str, bytes] = {}
        # A conversation's customer messages ping its agent at a bounded rate (a flood is a few
        # notices, each saying how many messages it stands for: services.delivery.pacing).
        self.pacing = MessagePacing()
        # Started from a snapshot: the conversations open in it, whose contact, preview and
        # subject (personal data, not in a snapshot) are still to be read from the log, as
        # they stood at ``unread_until`` (``unread_in``, then ``absorb``).
        self.unread: set[str] = set()
        self.unread_until = 0
        self.console_url = console_url.rstrip("/")
        self.api_url = api_url.rstrip("/")
        self.preview_lines = preview_lines

    def restore(self, state: RouterState) -> None:
        """Start (a new ``Facts``) from a snapshot's state (``state.last_seq``: where to read the log on from).
        The personal facts of the conversations open in it are read when first needed."""
        self.state = reading_only(state)
        self.unread = set(state.conversations)
        self.unread_until = state.last_seq

    def unread_in(self, batch: Iterable[StoredEvent]) -> set[str]:
        """The conversations of ``batch`` whose personal facts are still to be read."""
        unread = self.unread
        return {cid for stored in batch if (cid := getattr(stored.event, "conversation_id", None)) in unread}

    def absorb(self, conversation_id: str, events: Iterable[StoredEvent]) -> None:
        """The personal facts of a conversation open at the snapshot, from its events on the
        log (those after the snapshot are left for ``apply``, in order)."""
        for stored in events:
            if stored.seq <= self.unread_until:
                self._remember(stored.event)
        self.unread.discard(conversation_id)

    def _remember(self, event: object) -> bool:
        """Keep what a notice shows of ``event``; True: a customer message folded before."""
        if isinstance(event, ConversationOpened):
            self.contacts[event.conversation_id] = event.contact
        elif isinstance(event, MessageReceived):
            heard = remembered(self.heard.get(event.conversation_id, b""), event)
            if heard is None:
                return True  # re-published: its preview and its notice were made when it came
            self.heard[event.conversation_id] = heard
            if event.metadata.get("auto"):
                return False  # an out-of-office, a bounce: not what the customer said (no preview, no subject)
            self.previews[event.conversation_id] = preview(event.text, self.preview_lines)
            if subject := event.metadata.get("subject", "").strip():
                self.subjects.setdefault(event.conversation_id, subject[:200])
        elif isinstance(event, ConversationResolved):
            self._forget(event.conversation_id)
        return False

    def _forget(self, conversation_id: str) -> None:
        self.previews.pop(conversation_id, None)
        self.contacts.pop(conversation_id, None)
        self.subjects.pop(conversation_id, None)
        self.heard.pop(conversation_id, None)
        self.pacing.forget(conversation_id)
        self.unread.discard(conversation_id)

    def apply(self, stored: StoredEvent) -> list[Notice]:
        """Fold one event; the notices it makes (computed on the state after it). A notice
        for an agent id that is no subject token (every agent's id is one: it names her
        ``rd.evt.a.<id>``) is for nobody: a hand-written offer to ``"a b"`` made a record key
        NATS refuses, outside the quarantine, and delivery stood down and tried it again for
        ever. Left out, logged and counted instead (``relaydesk_skipped_total``)."""
        notices = self._apply(stored)
        for notice in notices:
            if not subjects.is_token(notice.agent_id):
                return [n for n in notices if self._addressed(n)]
        return notices

    def _addressed(self, notice: Notice) -> bool:
        if subjects.is_token(notice.agent_id):
            return True
        count_skip(UNADDRESSED)
        log.warning(
            "delivery.notice_for_nobody",
            notice=notice.kind,
            seq=notice.seq,
            conversation_id=notice.conversation_id,
            agent_id=notice.agent_id[:64],
            action="no notice: no agent can have this id",
        )
        return False

    def _apply(self, stored: StoredEvent) -> list[Notice]:
        event = stored.event
        if isinstance(event, ConversationOpened | MessageReceived) and self._remember(event):
            self.state = evolve(self.state, stored.seq, stored.subject, event)
            return []
        if isinstance(event, ConversationResolved) and event.erased:
            # The person is being erased (their delivery records were just purged): the
            # resolved notice, and its record, quote nothing of theirs.
            self._forget(event.conversation_id)
        notices: list[Notice] = []
        if isinstance(event, ConversationResolved | ConversationTransferred | ConversationEscalated):
            # Said before the fold forgets who held it (and, resolved, the facts to show).
            held = self.state.conversations.get(event.conversation_id)
            resolved = isinstance(event, ConversationResolved)
            named = event.agent_id if isinstance(event, ConversationResolved) else event.from_agent
            holder = named or (held.agent_id if held is not None else None)
            # Not of a conversation already resolved (a re-published event: router.replays).
            if held is not None and holder and (resolved or getattr(event, "to_agent", None) != holder):
                kind = "resolved" if resolved else "transferred"
                notices.append(self._notice(kind, holder, stored, event.conversation_id, event.customer_id))
        self.state = evolve(self.state, stored.seq, stored.subject, event)
        conversation_id = getattr(event, "conversation_id", None)
        if conversation_id is not None and conversation_id not in self.state.conversations:
            # Resolved, or an opening the fold did not take (re-published after the resolution):
            # nothing will be told of it, so nothing of the customer's is kept for it.
            self._forget(conversation_id)
        if replays.was_repeat(self.state, stored.seq):
            return []  # folded before (re-published): its notices were sent then
        # An offer or assignment of a conversation the fold never saw opened is one the router
        # ignores too (a hand-published event): an agent told of it could act on nothing.
        # Nor of a conversation resolved: its answers were told when they happened.
        if conversation_id not in self.state.conversations:
            return notices
        if isinstance(event, AgentOffered):
            notices.append(self._notice("offer", event.agent_id, stored, event.conversation_id, event.customer_id))
        elif isinstance(event, ConversationAssigned):
            notices.append(self._notice("assigned", event.agent_id, stored, event.conversation_id, event.customer_id))
        elif isinstance(event, OfferExpired):
            notices.append(
                self._notice("offer_expired", event.agent_id, stored, event.conversation_id, event.customer_id)
            )
        elif isinstance(event, ConversationReleased):
            notices.append(self._notice("released", event.agent_id, stored, event.conversation_id, event.customer_id))
        elif isinstance(event, OfferAccepted | OfferDeclined):
            kind = "accepted" if isinstance(event, OfferAccepted) else "declined"
            notices.append(self._notice(kind, event.agent_id, stored, event.conversation_id, event.customer_id))
        elif isinstance(event, MessageReceived) and not event.metadata.get("auto"):
            # Automatic mail (out-of-office, bounce) is recorded in its thread and routed to
            # nobody: it pings nobody either.
            conv = self.state.conversations.get(event.conversation_id)
            if conv is not None and conv.status == "assigned" and conv.agent_id:
                told = self.pacing.take(event.conversation_id, event.at)
                if told:
                    notice = self._notice("message", conv.agent_id, stored, event.conversation_id, event.customer_id)
                    notice.body["messages"] = told
                    notices.append(notice)
        return notices

    def _notice(self, kind: str, agent_id: str, stored: StoredEvent, cid: str, customer_id: str) -> Notice:
        conv = self.state.conversations.get(cid)
        customer = self.state.customers.get(customer_id)
        at: datetime = stored.event.at  # type: ignore[union-attr]
        waiting_since = conv.waiting_since if conv is not None else None
        body: dict[str, Any] = {
            "notice": kind,
            "seq": stored.seq,
            "at": at.isoformat(),
            "agent_id": agent_id,
            "agent_name": agent.profile.name if (agent := self.state.agents.get(agent_id)) else agent_id,
            "conversation": {
                "id": cid,
                "customer_id": customer_id,
                "channel": conv.channel if conv else None,
                "status": conv.status if conv else None,
                "public": conv.public if conv else False,
            },
            "customer": {
                "id": customer_id,
                "tier": customer.tier if customer else "standard",
                "flags": list(customer.flags) if customer else [],
                "contact": mask_contact(self.contacts.get(cid, "")) if cid in self.contacts else None,
            },
            "requirements": msgspec.to_builtins(conv.requirements) if conv else {},
            "wait_seconds": round((at - waiting_since).total_seconds(), 1) if waiting_since else None,
            "offer_expires_at": conv.offer_expires_at.isoformat() if conv and conv.offer_expires_at else None,
            "preview": self.previews.get(cid, ""),
            "subject": self.subjects.get(cid),
            "links": {
                "console": f"{self.console_url}#conversation={cid}",
                "accept": f"{self.console_url}#accept={cid}",
                "accept_api": f"{self.api_url}/v1/conversations/{cid}/accept",
            },
        }
        return Notice(agent_id, kind, stored.seq, cid, customer_id, body)


class Holders:
    """Which agent each conversation is with (offered or assigned), from the events alone."""

    def __init__(self, initial: dict[str, str] | None = None, customers: dict[str, str] | None = None) -> None:
        self.holder: dict[str, str] = dict(initial or {})
        # The customer of each conversation held, where known (a holder loaded from a snapshot
        # has none until it is held again); ``other_customer``: events left out for it.
        self.customer: dict[str, str] = dict(customers or {})
        self.other_customer = 0

    def concerned(self, stored: StoredEvent) -> set[str]:
        """Agents ``stored`` concerns; updates who holds what."""
        event = stored.event
        parsed = subjects.parse_conversation_subject(stored.subject)
        customer_id, cid = parsed if parsed else ("", "")
        if self.customer.get(cid, customer_id) != customer_id:
            # Another customer's conversation reusing the id of one held (a hand-written event):
            # not the holder's (her stream got its messages), nor a change of who holds it.
            self.other_customer += 1
            return Holders().concerned(stored)
        before = self.holder.get(cid)
        out: set[str] = {before} if before else set()
        match event:
            case AgentOffered() | ConversationAssigned():
                self.holder[cid] = event.agent_id
                self.customer[cid] = customer_id
                out.add(event.agent_id)
            case OfferAccepted():
                out.add(event.agent_id)
            case OfferDeclined() | OfferExpired() | ConversationReleased():
                if before == event.agent_id:
                    self.holder.pop(cid, None)
                out.add(event.agent_id)
            case ConversationTransferred():
                self.holder.pop(cid, None)
                out.update(a for a in (event.from_agent, event.to_agent) if a)
            case ConversationResolved():
                self.holder.pop(cid, None)
            case ReplyRequested() if event.agent_id:
                out.add(event.agent_id)
            case AgentStatusChanged() | AgentProfileUpdated() | AgentTokenIssued() | AgentTokenRevoked():
                out = {event.agent_id}
        if cid not in self.holder:
            self.customer.pop(cid, None)  # kept for what is held alone
        return out
