"""Custody: who held which conversation, folded from the log for the API's access rules.

"Held" is a fact of the log, not of the routing view (which forgets resolved conversations):
``Custody`` folds, for every conversation ever assigned, the agents it was assigned to (by the
router or by accepting an offer) and whether it is resolved; ``install`` feeds it from the
API's log reader and keeps it in the view's snapshot (ids only). The rules that read it:
``services.api.access``.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from events import subjects
from events.model import ConversationAssigned, ConversationResolved, OfferAccepted
from events.skips import another_customers
from events.store import StoredEvent
from services.api.readmodel import LiveState

# Where an event naming a conversation custody knows under another customer is counted.
OTHER_CUSTOMER = "api.custody.other_customer"


class _Dumped(msgspec.Struct):
    """The custody fold as the API view's snapshot holds it: its dicts as they are, which
    msgspec encodes in C. A snapshot is encoded on the API's loop: at 1,000,000 conversations a
    tuple per conversation took 1.8 s, this 0.17 s (66 MB rather than 37; loading takes 3.5 s,
    once at start, where the tuples took 4.3 s)."""

    customer_of: dict[str, str]
    holders: dict[str, list[str]]
    resolved: dict[str, int]
    last_seq: dict[str, int]


# Before 2026-12-06: one row per conversation (still read).
_Rows = list[tuple[str, str, list[str], int, int]]
_DUMPS = msgspec.msgpack.Decoder(_Dumped | _Rows)


class Custody:
    """The fold of who held which conversation: conversation -> (customer, agents it was
    assigned to, resolved), and agent -> conversations she held and customers she served. Only
    conversations that were ever assigned are kept (an offer alone is not a hold)."""

    def __init__(self) -> None:
        self.customer_of: dict[str, str] = {}
        self.holders: dict[str, list[str]] = {}
        self.resolved: dict[str, int] = {}  # conversation -> seq of its resolution
        self.last_seq: dict[str, int] = {}  # conversation -> seq of its last custody fact
        self.held_by: dict[str, set[str]] = {}
        # agent -> customers of the conversations she held: an agent's access to a customer is
        # one look-up, not a walk over every conversation she ever held (9,000 after a year).
        self.served: dict[str, set[str]] = {}

    def apply(self, stored: StoredEvent) -> None:
        event = stored.event
        if isinstance(event, ConversationAssigned | OfferAccepted):
            self._held(stored, event.agent_id)
        elif isinstance(event, ConversationResolved):
            parsed = subjects.parse_conversation_subject(stored.subject)
            if parsed is None or self._other_customer(stored, *parsed):
                return
            if event.agent_id:
                self._held(stored, event.agent_id)
            if parsed[1] in self.holders:
                self.resolved[parsed[1]] = stored.seq
                self.last_seq[parsed[1]] = stored.seq

    def _held(self, stored: StoredEvent, agent_id: str) -> None:
        parsed = subjects.parse_conversation_subject(stored.subject)
        if parsed is None or self._other_customer(stored, *parsed):
            return
        customer_id, cid = parsed
        self.customer_of[cid] = customer_id
        holders = self.holders.setdefault(cid, [])
        if agent_id not in holders:
            holders.append(agent_id)
        self.held_by.setdefault(agent_id, set()).add(cid)
        self.served.setdefault(agent_id, set()).add(customer_id)
        self.last_seq[cid] = stored.seq
        self.resolved.pop(cid, None)  # reopened work is open again

    def _other_customer(self, stored: StoredEvent, customer_id: str, cid: str) -> bool:
        """An event on another customer's subject naming a conversation held for a customer (as
        ``router.fold`` leaves alone): folded, it moved the conversation to that customer and
        gave its holders both."""
        return another_customers(OTHER_CUSTOMER, self.customer_of.get(cid), customer_id, cid, stored.seq)

    def held(self, agent_id: str, cid: str) -> bool:
        return agent_id in self.holders.get(cid, ())

    def conversations_of(self, agent_id: str) -> set[str]:
        return self.held_by.get(agent_id, set())

    def resolved_of(self, agent_id: str, limit: int) -> list[str]:
        """Resolved conversations ``agent_id`` held, most recently resolved first."""
        mine = [cid for cid in self.conversations_of(agent_id) if cid in self.resolved]
        mine.sort(key=lambda cid: self.resolved[cid], reverse=True)
        return mine[:limit]

    def customers_served(self, agent_id: str) -> set[str]:
        return self.served.get(agent_id, set())

    def dump(self) -> bytes:
        """For the API view's snapshot: ids only, no personal data."""
        return msgspec.msgpack.encode(_Dumped(self.customer_of, self.holders, self.resolved, self.last_seq))

    def load(self, data: bytes) -> None:
        self.__init__()  # type: ignore[misc]
        dumped = _DUMPS.decode(data)
        if not isinstance(dumped, _Dumped):  # the older rows
            dumped = _Dumped(
                customer_of={cid: customer for cid, customer, _, _, _ in dumped},
                holders={cid: list(holders) for cid, _, holders, _, _ in dumped},
                resolved={cid: resolved for cid, _, _, resolved, _ in dumped if resolved},
                last_seq={cid: last for cid, _, _, _, last in dumped},
            )
        self.customer_of, self.holders = dumped.customer_of, dumped.holders
        self.resolved, self.last_seq = dumped.resolved, dumped.last_seq
        for cid, holders in self.holders.items():
            customer_id = self.customer_of[cid]
            for agent_id in holders:
                self.held_by.setdefault(agent_id, set()).add(cid)
                self.served.setdefault(agent_id, set()).add(customer_id)


CUSTODY = web.AppKey("custody", Custody)


def install(app: web.Application, live: LiveState) -> Custody:
    """Feed the custody fold from the API's log reader (before it starts)."""
    custody = Custody()
    app[CUSTODY] = custody
    live.add_fold(custody.apply, name="custody", saved=custody)
    return custody
