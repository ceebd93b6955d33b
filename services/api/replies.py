"""Replies leave through the log: the outbox half of ``POST /v1/conversations/{id}/reply``.

The reply command appends ``ReplyRequested`` and then queues a ``DeliverReply`` on
``rd.out.<channel>``: two writes. If the second one is lost (NATS away for a moment, the API
process killed in between), the log says an agent replied and no connector ever hears of it.
So the log is the outbox: every API process folds the replies still waiting for an outcome
(``MessageSent`` or ``DeliveryFailed``) and, when one has waited ``requeue_after`` seconds,
queues it again. ``RD_OUTBOUND`` drops a second message with the same ``Nats-Msg-Id`` (the
reply id) for a day, so a reply that was queued after all, or is being sent right now, is not
sent twice; several API processes doing the same are harmless too.

That window is not enough on its own: the server keeps it in memory and, after a restart,
rebuilds it from the messages still stored, and ``RD_OUTBOUND`` is a work queue, so the id of
every reply already delivered (acknowledged, so deleted) is forgotten. A reply this fold still
holds as waiting then went out a second time (found by a chaos audit): one whose outcome was on
the log but not yet in this API's view (a view catching up after a pause or a start), or one
whose connector had reported it on ``rd.inbound`` while intake had not recorded it yet (intake
lagging or stopped). So a reply is queued again only when, at that moment, intake has recorded
every inbound message (a connector reports the outcome there before it acknowledges the reply)
and the log itself, read then, holds no outcome for it (``intake_caught_up``,
``outcome_recorded``; the retry of a reply command asks the same, ``may_queue_again``); under
a backlog intake never clears, a lost reply waits for it.

A conversation's replies go out in the order they were written: one is queued only once every
earlier reply of its conversation has an outcome (``earlier_unsent``), and the relay queues it
as soon as the last of them has one (``Pending.held``). Found by a chaos audit: with two
connector processes of a channel, a reply held by one (retrying through an outage, or its
process killed or stopped until its ack wait ran out) went out after the later replies the
other process had sent meanwhile; 18 of 48 conversations read out of order, one reply sent
after the eleven written after it. A reply requested more than ``ORDER_WAIT`` ago (stuck:
parked, or older than the requeue horizon) no longer holds the later ones back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from aiohttp import web

from events import subjects
from events.model import DeliveryFailed, MessageSent, ReplyRequested
from events.personal import KeyDestroyed
from events.skips import count_skip
from events.stopping import cancel_and_wait
from events.store import EventStore, StoredEvent
from services.api import uploads
from services.api.common import ApiDeps
from services.api.reply_routing import agent_name, deliver_command, queue, reply_route

log = structlog.get_logger(__name__)

# Older replies are beyond RD_OUTBOUND's duplicate window (a day): queuing them again could
# send them twice, so they are left for an operator (the timeline shows no outcome).
REQUEUE_HORIZON = timedelta(hours=23)
# An earlier reply of the conversation without an outcome holds a later one back at most this
# long after it was requested: longer than a connector's tries take through an outage with the
# defaults (10 tries, pauses up to 30 s, a Retry-After up to 60 s, redeliveries after a crash).
ORDER_WAIT = timedelta(minutes=15)
RELAY_TASK = web.AppKey("reply_relay", asyncio.Task[None])
# Where a request for a reply id already waiting is counted (``PendingReplies.apply``).
REPEATED_REQUEST = "api.replies.repeated_request"
OUTCOME_ELSEWHERE = "api.replies.outcome_elsewhere"  # an outcome on another conversation's subject


async def intake_caught_up(deps: ApiDeps) -> bool:
    """Intake has recorded every message ``RD_INBOUND`` held a moment ago, so an outcome a
    connector reported before then is on the log (read after this, never before)."""
    js = deps.nc.jetstream()
    last = (await js.stream_info(subjects.INBOUND_STREAM)).state.last_seq
    info = await js.consumer_info(subjects.INBOUND_STREAM, subjects.INTAKE_DURABLE)
    floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
    # Nothing left to deliver or to acknowledge says the same where the newest messages
    # were deleted before intake read them (an erasure): the floor would stay below them.
    return floor >= last or not (info.num_pending or info.num_ack_pending)


async def outcome_recorded(deps: ApiDeps, seq: int, reply: ReplyRequested) -> bool:
    """The log, read now, has ``MessageSent`` or ``DeliveryFailed`` for ``reply`` (stored at
    ``seq``; this API's view may not have folded it yet), before ``seq`` too: a request
    re-published after its outcome (a partial restore) was sent again."""
    after = await deps.store.read_direct(subjects.conversation(reply.customer_id, reply.conversation_id))
    return any(
        isinstance(stored.event, MessageSent | DeliveryFailed) and stored.event.reply_id == reply.reply_id
        for stored in after
    )


async def may_queue_again(deps: ApiDeps, seq: int, reply: ReplyRequested) -> bool:
    """Whether ``reply``, on the log without an outcome, may be queued again now: intake has
    recorded every outcome connectors reported, and the log read after that holds none for it
    (a reply a connector sent, whose report intake had not recorded yet, would go out twice
    once a NATS restart forgot ``RD_OUTBOUND``'s duplicate ids)."""
    return await intake_caught_up(deps) and not await outcome_recorded(deps, seq, reply)


async def waiting_before(store: EventStore, reply: ReplyRequested, now: datetime) -> list[str]:
    """The earlier replies of ``reply``'s conversation that hold it back, read from the log now
    (``earlier_unsent``): what the API and the sinks ask before queuing a reply."""
    events = await store.read_direct(subjects.conversation(reply.customer_id, reply.conversation_id))
    return earlier_unsent(events, reply, now)


def earlier_unsent(events: Iterable[StoredEvent], reply: ReplyRequested, now: datetime) -> list[str]:
    """The replies requested before ``reply`` on its conversation's ``events`` that have no
    outcome (``MessageSent`` / ``DeliveryFailed``) yet, requested within ``ORDER_WAIT``: it is
    not queued before them."""
    before: dict[str, ReplyRequested] = {}
    mine = False  # the outcomes after ``reply`` count too: only the requests before it do
    for stored in events:
        event = stored.event
        if isinstance(event, ReplyRequested) and not mine:
            mine = event.reply_id == reply.reply_id
            if not mine:
                before[event.reply_id] = event
        elif isinstance(event, MessageSent | DeliveryFailed):
            before.pop(event.reply_id, None)
    return [rid for rid, earlier in before.items() if now - earlier.at < ORDER_WAIT]


@dataclass(slots=True)
class Pending:
    seq: int
    reply: ReplyRequested
    queued_again_at: datetime | None = None
    # An earlier reply of its conversation had no outcome when it was requested: it was not
    # queued then (``earlier_unsent``), and goes as soon as nothing earlier holds it back.
    held: bool = False


class PendingReplies:
    """A fold of the log: replies requested and not yet sent or failed, by reply id."""

    def __init__(self) -> None:
        self.by_id: dict[str, Pending] = {}
        # By (customer, conversation), each in the log's order: a hand-written request reusing a
        # conversation id under another customer held this conversation's replies back.
        self.by_conversation: dict[tuple[str, str], dict[str, Pending]] = {}
        self.seen = 0  # last sequence applied
        # Set when an outcome lets a held reply go: the relay queues it now, not at its next sweep.
        self.released = asyncio.Event()

    def apply(self, stored: StoredEvent) -> None:
        self.seen = max(self.seen, stored.seq)
        event = stored.event
        if isinstance(event, ReplyRequested):
            if (earlier := self.by_id.get(event.reply_id)) is not None:
                # Waiting already: re-published, or a hand-written one reusing its id (on another
                # conversation the first was kept there for good, holding its later replies back).
                log.warning("reply.request_repeated", reply_id=event.reply_id, seq=stored.seq, first=earlier.seq)
                count_skip(REPEATED_REQUEST)
                return
            same = self.by_conversation.setdefault((event.customer_id, event.conversation_id), {})
            pending = Pending(stored.seq, event, held=any(p.seq < stored.seq for p in same.values()))
            self.by_id[event.reply_id] = pending
            same[event.reply_id] = pending
        elif isinstance(event, MessageSent | DeliveryFailed):
            waiting = self.by_id.get(event.reply_id)
            if waiting is not None and (waiting.reply.customer_id, waiting.reply.conversation_id) != (
                event.customer_id,
                event.conversation_id,
            ):
                # Hand-written (connectors report the reply's own): it took the reply out, never
                # queued again if lost. ``outcome_recorded`` reads the reply's conversation alone.
                log.warning("reply.outcome_elsewhere", reply_id=event.reply_id, seq=stored.seq, subject=stored.subject)
                count_skip(OUTCOME_ELSEWHERE)
                return
            self.forget(event.reply_id)

    def forget(self, reply_id: str) -> None:
        pending = self.by_id.pop(reply_id, None)
        if pending is None:
            return
        key = (pending.reply.customer_id, pending.reply.conversation_id)
        same = self.by_conversation.get(key, {})
        same.pop(reply_id, None)
        if not same:
            self.by_conversation.pop(key, None)
        elif any(p.held for p in same.values()):
            self.released.set()

    def held_back(self, pending: Pending, now: datetime) -> bool:
        """An earlier reply of its conversation, requested within ``ORDER_WAIT``, has no outcome."""
        same = self.by_conversation.get((pending.reply.customer_id, pending.reply.conversation_id), {})
        return any(p.seq < pending.seq and now - p.reply.at < ORDER_WAIT for p in same.values())

    def refeed_from(self) -> int:
        """Where to read the log again from to rebuild this fold after a snapshot of the API's
        view (its replies hold personal data, so they are not put in the snapshot)."""
        return min((p.seq for p in self.by_id.values()), default=self.seen + 1)

    def refeed_subjects(self) -> dict[str, int]:
        """What to read again after a snapshot of the API's view: the conversation of each
        reply waiting for an outcome, from its earliest such reply."""
        out: dict[str, int] = {}
        for pending in self.by_id.values():
            subject = subjects.conversation(pending.reply.customer_id, pending.reply.conversation_id)
            out[subject] = min(out.get(subject, pending.seq), pending.seq)
        return out

    def due(self, now: datetime, requeue_after: float) -> list[Pending]:
        """Replies waiting longer than ``requeue_after`` (and not queued again within that
        time), and held ones nothing earlier holds back any more, oldest first; none behind an
        earlier reply of its conversation still waiting; replies past the horizon are forgotten."""
        wait = timedelta(seconds=requeue_after)
        out = []
        for reply_id, pending in list(self.by_id.items()):
            if now - pending.reply.at > REQUEUE_HORIZON:
                self.forget(reply_id)
                continue
            if self.held_back(pending, now):
                continue
            last = pending.queued_again_at or pending.reply.at
            if (pending.held and pending.queued_again_at is None) or now - last >= wait:
                out.append(pending)
        return sorted(out, key=lambda p: p.seq)


class ReplyRelay:
    """Queues again the replies the fold says are still waiting (see the module docstring)."""

    def __init__(
        self, deps: ApiDeps, pending: PendingReplies, requeue_after: float, clock: Callable[[], datetime]
    ) -> None:
        self.deps = deps
        self.pending = pending
        self.requeue_after = requeue_after
        self.clock = clock

    async def sweep(self) -> int:
        """Queue every due reply once; returns how many were queued."""
        now = self.clock()
        queued = 0
        due = self.pending.due(now, self.requeue_after)
        if due and not await intake_caught_up(self.deps):
            log.info("reply.requeue_deferred", due=len(due), reason="intake has inbound messages not recorded yet")
            return 0
        for item in due:
            reply = item.reply
            bound = log.bind(
                conversation_id=reply.conversation_id, customer_id=reply.customer_id, reply_id=reply.reply_id
            )
            if await outcome_recorded(self.deps, item.seq, item.reply):
                bound.info("reply.outcome_on_log", skipped="queuing it again: the log has its outcome")
                self.pending.forget(reply.reply_id)
                continue
            route = await reply_route(self.deps.store, reply.customer_id, reply.conversation_id, before_seq=item.seq)
            if route is None:
                bound.warning("reply.no_route")
                self.pending.forget(reply.reply_id)
                continue
            try:
                command = deliver_command(reply, route, agent_name(self.deps.live.state, reply))
                deliver = uploads.with_links(self.deps, command)  # fresh file links
                await queue(self.deps.nc, deliver, self.deps.store.cipher)
            except KeyDestroyed:
                bound.warning("reply.customer_erased", skipped="the reply: its customer was erased")
                self.pending.forget(reply.reply_id)
                continue
            item.queued_again_at = now
            queued += 1
            if item.held:
                item.held = False
                bound.info("reply.queued_in_turn", waited_s=round((now - reply.at).total_seconds(), 1))
            else:
                bound.info("reply.queued_again", waited_s=round((now - reply.at).total_seconds(), 1))
        return queued

    async def run(self) -> None:
        every = max(0.2, min(self.requeue_after / 2, 10.0))
        wait = every
        while True:
            # A held reply let go by an outcome is queued at once (its turn came), not at the next sweep.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.pending.released.wait()
            self.pending.released.clear()
            wait = every
            try:
                await self.sweep()
            except Exception as err:  # NATS away: the next sweep tries again
                log.warning("reply.relay_failed", error=repr(err), skipped="this sweep")
                count_skip("reply.relay_sweep")
            if any(p.held and not self.pending.held_back(p, self.clock()) for p in self.pending.by_id.values()):
                wait = min(every, 0.25)  # deferred (intake not caught up yet): soon again


def install(app: web.Application, deps: ApiDeps) -> None:
    """Fold pending replies from the API's log reader; run the relay while the app runs."""
    pending = PendingReplies()
    deps.live.add_fold(
        pending.apply, name="replies_pending", refeed_from=pending.refeed_from, refeed_subjects=pending.refeed_subjects
    )
    relay = ReplyRelay(deps, pending, deps.reply_requeue_after, deps.clock)

    async def start(app: web.Application) -> None:
        app[RELAY_TASK] = asyncio.create_task(relay.run(), name="reply-relay")

    async def stop(app: web.Application) -> None:
        await cancel_and_wait(app.get(RELAY_TASK))

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
