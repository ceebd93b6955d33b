"""The web chat hears that its conversation was resolved.

A visitor whose conversation an agent resolved saw nothing: their next message opened a new
conversation, perhaps with another agent, and they never knew why. Every API process folds the
log's ``ConversationResolved`` facts (whoever resolved: an agent, a supervisor, a helpdesk sink,
the operator) and, for a conversation whose customer last wrote on a channel whose connector
shows the notice (``ApiDeps.notice_channels``: the web chat, and any installed connector whose
``notices`` holds ``resolved``), queues a ``DeliverReply`` with ``notice="resolved"`` on
``rd.out.<channel>``, routed like a reply; the chat connector stores it as a ``closed`` frame
and the widget says the conversation ended.

Safe to repeat, like the reply relay (``replies.py``): the notice's id is
``resolved:<conversation id>``, which ``RD_OUTBOUND`` and the chat history each deduplicate for
a day, so several API processes, a restart that folds the same resolution again, or a queue that
failed and is tried again show one notice. A resolution older than ``NOTICE_HORIZON`` when it is
folded (a first start reading a long log) or still unqueued after it is left: the visitor has
gone, and a late notice under a newer conversation would mislead.

None for a resolution by the customer's erasure (``erased``) or by an unlink of the address
the conversation was on (``address_unlinked``): the address is someone else's now, and a web
chat's ``closed`` frame could be stored in its history after the unlink removed the customer's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from aiohttp import web

from events.model import ConversationResolved, DeliverReply
from events.personal import KeyDestroyed
from events.skips import count_skip
from events.stopping import cancel_and_wait
from events.store import StoredEvent
from services.api.common import ApiDeps
from services.api.reply_routing import queue, reply_route

log = structlog.get_logger(__name__)

NOTICE_HORIZON = timedelta(minutes=10)
# Channels whose connector shows a ``resolved`` notice when nothing else is known (a test's
# ``ApiDeps``). The API is given ``ApiDeps.notice_channels``: the channel of every installed
# connector whose ``Connector.notices`` holds ``resolved`` (``connectors.sdk.registry``). Only
# these get one: a connector from before notices would send the empty text as a message.
NOTICE_CHANNELS = frozenset({"chat"})
SWEEP_EVERY_S = 0.5
CLOSINGS_TASK = web.AppKey("closing_notices", asyncio.Task[None])


def notice_id(conversation_id: str) -> str:
    return f"resolved:{conversation_id}"


@dataclass(frozen=True, slots=True)
class Closing:
    seq: int
    event: ConversationResolved


class PendingClosings:
    """A fold of the log: resolutions folded within ``NOTICE_HORIZON`` whose notice is not yet queued."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        # By (customer, conversation): a hand-written resolution reusing a conversation id under
        # another customer took the place of (or was kept instead of) the real one's notice.
        self.by_conversation: dict[tuple[str, str], Closing] = {}
        self.seen = 0  # last sequence applied

    def apply(self, stored: StoredEvent) -> None:
        self.seen = max(self.seen, stored.seq)
        event = stored.event
        # An erasure's closing says nothing: the customer asked to be forgotten, and a frame
        # stored after the chat history was erased would outlive it.
        if not isinstance(event, ConversationResolved) or event.erased or self.clock() - event.at > NOTICE_HORIZON:
            return
        # Nor an unlink's: the address is someone else's now, and on the web chat the frame
        # could land in its history after the unlink took the customer's frames out of it.
        if event.address_unlinked:
            log.info(
                "closing.notice_skipped",
                conversation_id=event.conversation_id,
                customer_id=event.customer_id,
                seq=stored.seq,
                reason="resolved by an unlink: the address is no longer the customer's",
            )
            return
        self.by_conversation.setdefault((event.customer_id, event.conversation_id), Closing(stored.seq, event))

    def refeed_from(self) -> int:
        """After a snapshot of the API's view: read the log again from the oldest resolution
        still waiting for its notice (none: from after the snapshot)."""
        return min((c.seq for c in self.by_conversation.values()), default=self.seen + 1)

    def due(self) -> list[Closing]:
        """Every waiting resolution, oldest first; those past the horizon are dropped, logged."""
        now = self.clock()
        out = []
        for key, closing in list(self.by_conversation.items()):
            if now - closing.event.at > NOTICE_HORIZON:
                del self.by_conversation[key]
                log.warning(
                    "closing.notice_given_up",
                    conversation_id=closing.event.conversation_id,
                    customer_id=closing.event.customer_id,
                    seq=closing.seq,
                    reason="not queued within the horizon",
                )
                count_skip("api.closing_notice")
                continue
            out.append(closing)
        return sorted(out, key=lambda c: c.seq)


class ClosingNotices:
    """Queues the notice of each waiting resolution whose conversation is on a notice channel."""

    def __init__(self, deps: ApiDeps, pending: PendingClosings) -> None:
        self.deps = deps
        self.pending = pending

    async def sweep(self) -> int:
        """Queue each due notice once; returns how many were queued. A resolution whose notice
        could not be queued (NATS away) stays for the next sweep."""
        queued = 0
        for closing in self.pending.due():
            event = closing.event
            bound = log.bind(conversation_id=event.conversation_id, customer_id=event.customer_id)
            try:
                route = await reply_route(
                    self.deps.store, event.customer_id, event.conversation_id, before_seq=closing.seq
                )
                if route is not None and route.channel in self.deps.notice_channels:
                    # Where a reply would go, with what a reply carries to get there (the
                    # number, page or thread the customer wrote to: ``DeliverReply.metadata``).
                    notice = DeliverReply(
                        conversation_id=event.conversation_id,
                        customer_id=event.customer_id,
                        channel=route.channel,
                        reply_id=notice_id(event.conversation_id),
                        contact=route.contact,
                        text="",
                        thread_ref=route.thread_ref,
                        metadata=route.metadata,
                        notice="resolved",
                    )
                    await queue(self.deps.nc, notice, self.deps.store.cipher)
                    queued += 1
                    # Once per web chat resolution in every API process: at debug.
                    bound.debug("closing.notice_queued", channel=route.channel)
            except KeyDestroyed:
                bound.info("closing.customer_erased", skipped="the notice: its customer was erased")
            except Exception as err:  # NATS away: the next sweep tries again, until the horizon
                bound.warning("closing.notice_not_queued", error=type(err).__name__, seq=closing.seq)
                count_skip("api.closing_notice_queue")
                continue
            self.pending.by_conversation.pop((event.customer_id, event.conversation_id), None)
        return queued

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            await self.sweep()


def install(app: web.Application, deps: ApiDeps) -> None:
    """Fold resolutions from the API's log reader; queue their notices while the app runs."""
    pending = PendingClosings(deps.clock)
    # A snapshot from before notices existed owes none: the whole log is not read again for it.
    deps.live.add_fold(pending.apply, name="closings_pending", refeed_from=pending.refeed_from, needs_the_past=False)
    notices = ClosingNotices(deps, pending)

    async def start(app: web.Application) -> None:
        app[CLOSINGS_TASK] = asyncio.create_task(notices.run(), name="closing-notices")

    async def stop(app: web.Application) -> None:
        await cancel_and_wait(app.get(CLOSINGS_TASK))

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
