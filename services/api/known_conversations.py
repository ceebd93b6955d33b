"""Every conversation on the log, known to the API's view without asking NATS to search.

The routing view holds open conversations, custody (``services.api.custody``) every one ever
assigned. A conversation resolved without ever being assigned (a customer who left, an
erasure, an operator closing spam) was in neither: to tell "resolved" (409) from "no such
conversation" (404), and to find an unknown conversation's customer, the API asked NATS for
the last event under every customer (``rd.evt.c.*.<id>``), which the server answers by walking
every customer's subjects; any agent token could make it do so at will with made-up ids
(a security audit). This fold keeps those few, so together the three know every conversation
the view has read, and an id none of them knows, once the view has read the log as it ended
when the request came, is no conversation.

They are kept by the routing view's 8-byte digest of the id (``router.replays.id_digest``), as
each customer's resolved conversations already are (``CustomerView.closed``). A view started
from a snapshot taken before this fold existed (an upgrade) did not read the resolutions
before it: the first look-up fills the fold from those per-customer digests instead.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from events import subjects
from events.digests import DIGEST
from events.model import ConversationResolved
from events.store import StoredEvent
from router.replays import id_digest
from router.state import RouterState
from services.api.common import ApiDeps
from services.api.custody import Custody


class _Dumped(msgspec.Struct, array_like=True):
    customer_of: dict[bytes, str]


class ResolvedUnassigned:
    """Conversation digest -> customer, for conversations resolved while custody knew no holder."""

    def __init__(self, custody: Custody, state: Callable[[], RouterState]) -> None:
        self.custody = custody
        self.state = state  # the view's routing state, for the fill after an upgrade
        self.customer_of: dict[bytes, str] = {}
        self.unfilled = False

    def apply(self, stored: StoredEvent) -> None:
        """After custody's fold of the same event (installed after it)."""
        if not isinstance(stored.event, ConversationResolved):
            return
        parsed = subjects.parse_conversation_subject(stored.subject)
        if parsed is not None and parsed[1] not in self.custody.holders:
            self.customer_of[id_digest(parsed[1])] = parsed[0]

    def customer(self, conversation_id: str) -> str | None:
        """The customer of a resolved conversation, whoever held it (None: not known here)."""
        if self.unfilled:
            self.fill()
        return self.custody.customer_of.get(conversation_id) or self.customer_of.get(id_digest(conversation_id))

    def missed_the_past(self) -> None:
        """The view started after a snapshot without this fold (services.api.readmodel)."""
        self.unfilled = True

    def fill(self) -> None:
        """Every customer's resolved conversations the routing view remembers, but custody's."""
        self.unfilled = False
        held = {id_digest(cid) for cid in self.custody.customer_of}
        for customer_id, customer in self.state().customers.items():
            closed = customer.closed
            for at in range(0, len(closed), DIGEST):
                digest = closed[at : at + DIGEST]
                if digest not in held:
                    self.customer_of.setdefault(digest, customer_id)

    def dump(self) -> bytes:
        if self.unfilled:
            self.fill()
        return msgspec.msgpack.encode(_Dumped(self.customer_of))

    def load(self, data: bytes) -> None:
        self.customer_of = msgspec.msgpack.decode(data, type=_Dumped).customer_of


def install(deps: ApiDeps, custody: Custody) -> ResolvedUnassigned:
    """After ``custody.install``: its fold must see each event after custody's."""
    known = ResolvedUnassigned(custody, lambda: deps.live.state)
    deps.known_conversations = known
    deps.live.add_fold(known.apply, name="resolved_unassigned", saved=known, needs_the_past=False)
    return known
