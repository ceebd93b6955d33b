"""What the console's work list shows beside the routing facts: who the customer is (name,
masked address), the last thing they wrote and the email subject.

A fold of the API's one log reader (``LiveState.add_fold``), so a work list or a stream's
``work`` frame costs no read of the log per item: per open conversation it keeps the contact
(``ConversationOpened``), the first 80 characters of the customer's last message, the first
email subject and the display name the connector heard (``metadata.sender_name``); per
customer the name the team set (``CustomerProfileUpdated.name``), most recent first.

These are personal data, so the fold is not in the view's snapshot: after a snapshot it is fed
again the events of each open conversation, from its first one (``refeed_subjects``: one
conversation left open for months costs its own events, not every event since). A customer's
name can be older than that: a customer whose name the fold has not seen is looked up once on
their own ``_customer`` subject (a handful of events, one direct-get round trip) and cached;
later profile updates replace it as they are folded. The cache of names is bounded (LRU).
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import phonenumbers
import structlog

from events import subjects
from events.model import ConversationOpened, ConversationResolved, CustomerProfileUpdated, MessageReceived
from events.skips import another_customers, count_skip
from events.store import EventStore, StoredEvent
from events.text import shorten
from router.state import RouterState

log = structlog.get_logger(__name__)

PREVIEW_CHARS = 80
NAMES_KEPT = 50_000
NO_NAME: tuple[int, str | None] = (0, None)
# Where an event naming another customer's open conversation is counted (``WorkspaceFacts.apply``).
OTHER_CUSTOMER = "api.workspace.other_customer"


@dataclass(slots=True)
class ConversationFacts:
    customer_id: str
    opened_seq: int
    contact: str | None = None
    preview: str | None = None
    subject: str | None = None
    sender_name: str | None = None


def mask_address(contact: str | None) -> str | None:
    """Enough to recognise, not enough to use: ``+1 •••• 0142``, ``a•••@example.com``; other
    addresses (page-scoped ids, chat visitors) keep their last 4 characters."""
    if not contact:
        return None
    kind, sep, rest = contact.partition(":")
    value = rest if sep and kind.isalpha() and not rest.startswith("//") else contact
    if "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}•••@{domain}"
    if value.startswith("+"):
        try:
            number = phonenumbers.parse(value)
        except phonenumbers.NumberParseException:
            number = None
        digits = "".join(ch for ch in value if ch.isdigit())
        if number is not None and number.country_code:
            return f"+{number.country_code} •••• {digits[-4:]}"
        return f"+•••• {digits[-4:]}"
    return "••••" + value[-4:] if len(value) > 6 else "••••"


def preview_of(text: str) -> str:
    one_line = " ".join(text.split())
    return shorten(one_line, PREVIEW_CHARS)


class WorkspaceFacts:
    def __init__(self, store: EventStore | None) -> None:
        self.store = store
        self.conversations: dict[str, ConversationFacts] = {}
        # customer -> (sequence of the profile update that said it, name); (0, None): looked up, none.
        self.names: OrderedDict[str, tuple[int, str | None]] = OrderedDict()
        self.seen = 0
        self._lookups: dict[str, asyncio.Task[None]] = {}

    # -- the fold ---------------------------------------------------------------------------

    def apply(self, stored: StoredEvent) -> None:
        self.seen = max(self.seen, stored.seq)
        event = stored.event
        if isinstance(event, ConversationOpened | MessageReceived | ConversationResolved):
            known = self.conversations.get(event.conversation_id)
            # A hand-written event reusing the id of another customer's open conversation
            # (``router.fold`` leaves that conversation alone too): its address and words were
            # shown in that customer's work item, and its resolution took the item away.
            cid = event.conversation_id
            if another_customers(OTHER_CUSTOMER, known and known.customer_id, event.customer_id, cid, stored.seq):
                return
        if isinstance(event, ConversationOpened):
            opened = self.conversations.setdefault(
                event.conversation_id, ConversationFacts(event.customer_id, stored.seq)
            )
            opened.contact = event.contact
        elif isinstance(event, MessageReceived):
            # (Its opening may come before where this fold was fed from: then it starts here.)
            facts = self.conversations.setdefault(
                event.conversation_id, ConversationFacts(event.customer_id, stored.seq)
            )
            if event.metadata.get("auto"):
                return  # an auto-reply or a bounce is not what the customer said
            if event.text.strip():
                facts.preview = preview_of(event.text)
            subject = event.metadata.get("subject", "").strip()
            if subject and facts.subject is None:
                facts.subject = subject[:200]
            if event.metadata.get("sender_name"):
                facts.sender_name = event.metadata["sender_name"][:200]
        elif isinstance(event, ConversationResolved):
            self.conversations.pop(event.conversation_id, None)
        elif isinstance(event, CustomerProfileUpdated):
            self._remember(event.customer_id, stored.seq, event.name)

    def refeed_from(self) -> int:
        """Where to read the log again from after a snapshot of the API's view."""
        return min((f.opened_seq for f in self.conversations.values()), default=self.seen + 1)

    def refeed_subjects(self) -> dict[str, int]:
        """What to read again after a snapshot of the API's view: each open conversation's
        subject from its first event (the names are looked up again as they are asked for)."""
        out: dict[str, int] = {}
        for cid, facts in self.conversations.items():
            subject = subjects.conversation(facts.customer_id, cid)
            out[subject] = min(out.get(subject, facts.opened_seq), facts.opened_seq)
        return out

    def _remember(self, customer_id: str, seq: int, name: str | None) -> None:
        current = self.names.get(customer_id)
        if current is not None and current[0] > seq:
            return  # a lookup read less than the fold has already seen
        self.names[customer_id] = (seq, name or None)
        self.names.move_to_end(customer_id)
        while len(self.names) > NAMES_KEPT:
            self.names.popitem(last=False)

    # -- customers' names -------------------------------------------------------------------

    def name_of(self, state: RouterState, customer_id: str, conversation_id: str | None = None) -> str | None:
        """The name the team set (the survivor's after a merge), else the display name the
        connector heard on this conversation, else None."""
        for cid in _customer_and_survivors(state, customer_id):
            known = self.names.get(cid)
            if known is not None and known[1]:
                return known[1]
        facts = self.conversations.get(conversation_id or "")
        return facts.sender_name if facts is not None else None

    def missing_names(self, state: RouterState, customer_ids: list[str]) -> list[str]:
        return [c for cid in customer_ids for c in _customer_and_survivors(state, cid) if c not in self.names]

    async def look_up(self, customer_ids: list[str]) -> None:
        """Read the names not yet known (each customer once, however many callers wait)."""
        tasks = []
        for cid in dict.fromkeys(customer_ids):
            if cid in self.names:
                continue
            task = self._lookups.get(cid)
            if task is None:
                task = self._lookups[cid] = asyncio.create_task(self._look_up(cid), name=f"name-of {cid}")
                task.add_done_callback(functools.partial(self._looked_up, cid))
            tasks.append(task)
        if tasks:
            # Shielded: one caller going away must not cancel a lookup others wait for.
            await asyncio.gather(*(asyncio.shield(task) for task in tasks))

    def _looked_up(self, customer_id: str, _task: asyncio.Task[None]) -> None:
        self._lookups.pop(customer_id, None)

    def look_up_soon(self, customer_ids: list[str]) -> None:
        """``look_up`` in the background (for a caller that cannot wait: a stream's frame)."""
        if customer_ids and self.store is not None:
            task = asyncio.get_running_loop().create_task(self.look_up(customer_ids))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _look_up(self, customer_id: str) -> None:
        if self.store is None:
            return
        try:
            events = await self.store.read_direct(subjects.customer_scope(customer_id))
        except Exception as err:  # NATS away: shown without a name now, asked again next time
            log.warning("workspace.name_lookup_failed", customer_id=customer_id, error=repr(err))
            count_skip("api.workspace_name")
            return
        seq, name = NO_NAME
        for stored in events:
            if isinstance(stored.event, CustomerProfileUpdated):
                seq, name = stored.seq, stored.event.name
        self._remember(customer_id, seq, name)

    # -- what the API serves ----------------------------------------------------------------

    def item_json(self, state: RouterState, conversation_id: str, customer_id: str) -> dict[str, Any]:
        """``customer`` (name, masked address, tier, flags), ``preview`` and ``subject``."""
        facts = self.conversations.get(conversation_id)
        customer = state.customer(customer_id)
        return {
            "customer": {
                "name": self.name_of(state, customer_id, conversation_id),
                "address": mask_address(facts.contact if facts else None),
                "tier": customer.tier if customer else "standard",
                "flags": list(customer.flags) if customer else [],
            },
            "preview": facts.preview if facts else None,
            "subject": facts.subject if facts else None,
        }


def _customer_and_survivors(state: RouterState, customer_id: str) -> list[str]:
    """The survivor first (its profile stands for a merged customer), then the customer."""
    return state.merge_chain(customer_id)[::-1]


_BY_VIEW: weakref.WeakKeyDictionary[Any, WorkspaceFacts] = weakref.WeakKeyDictionary()


def of(live: Any, store: EventStore | None = None) -> WorkspaceFacts:
    """The workspace facts folded by ``live`` (the API's ``LiveState``), made and registered
    as a fold on first use (route modules ask while the app is built, before the view starts)."""
    try:
        found = _BY_VIEW.get(live)
    except TypeError:  # a stand-in view that cannot be a weak key (tests building the app)
        return WorkspaceFacts(store)
    if found is None:
        found = _BY_VIEW[live] = WorkspaceFacts(store)
        live.add_fold(
            found.apply, name="workspace", refeed_from=found.refeed_from, refeed_subjects=found.refeed_subjects
        )
    return found
