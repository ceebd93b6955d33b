"""The fold behind the web chat's resolution notice: which resolutions still owe one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from events.codec import decode_reply
from events.model import ConversationOpened, ConversationResolved, DeliverReply, LogEvent, MessageReceived
from events.store import StoredEvent
from services.api.closings import NOTICE_HORIZON, ClosingNotices, PendingClosings, notice_id
from services.api.registry import notice_channels

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def stored(seq: int, event: LogEvent) -> StoredEvent:
    return StoredEvent(seq=seq, subject=f"rd.evt.c.cu1.{getattr(event, 'conversation_id', 'x')}", event=event)


def resolved(conversation_id: str, at: datetime = T0) -> ConversationResolved:
    return ConversationResolved(at=at, customer_id="cu1", conversation_id=conversation_id)


def test_a_recent_resolution_owes_a_notice_once_and_an_old_one_none() -> None:
    clock = Clock()
    pending = PendingClosings(clock)
    pending.apply(stored(1, resolved("old", T0 - NOTICE_HORIZON - timedelta(seconds=1))))  # a long log's past
    message = MessageReceived(
        at=T0, customer_id="cu1", conversation_id="a", channel="chat", message_id="m1", provider_message_id="p1"
    )
    pending.apply(stored(2, message))
    pending.apply(stored(3, resolved("a")))
    pending.apply(stored(4, resolved("a")))  # re-published: one notice
    pending.apply(stored(5, resolved("b")))
    erased = ConversationResolved(at=T0, customer_id="cu1", conversation_id="e", erased=True)
    pending.apply(stored(6, erased))  # the customer's erasure closed it: nothing is said
    unlinked = ConversationResolved(at=T0, customer_id="cu1", conversation_id="u", actor="op", address_unlinked=True)
    pending.apply(stored(7, unlinked))  # its address was unlinked: it is someone else's now
    assert [(c.seq, c.event.conversation_id) for c in pending.due()] == [(3, "a"), (5, "b")]
    assert notice_id("a") == "resolved:a"


def test_after_a_snapshot_the_log_is_read_again_from_the_oldest_notice_owed() -> None:
    clock = Clock()
    pending = PendingClosings(clock)
    pending.apply(stored(7, resolved("a")))
    pending.apply(stored(9, resolved("b")))
    assert pending.refeed_from() == 7
    del pending.by_conversation["cu1", "a"]  # queued
    assert pending.refeed_from() == 9
    del pending.by_conversation["cu1", "b"]
    assert pending.refeed_from() == 10  # nothing owed: nothing read again


def test_a_notice_not_queued_within_the_horizon_is_given_up() -> None:
    clock = Clock()
    pending = PendingClosings(clock)
    pending.apply(stored(1, resolved("a")))
    clock.now = T0 + NOTICE_HORIZON
    assert len(pending.due()) == 1
    clock.now = T0 + NOTICE_HORIZON + timedelta(seconds=1)
    assert pending.due() == [] and pending.by_conversation == {}


class FakeStore:
    """What ``ClosingNotices`` reads: one conversation's events, nothing sealed."""

    cipher = None

    def __init__(self, events: list[StoredEvent]) -> None:
        self.events = events

    async def read(self, filter_subject: str, from_seq: int = 1) -> list[StoredEvent]:
        return [e for e in self.events if e.subject == filter_subject and e.seq >= from_seq]


class FakeJetStream:
    def __init__(self) -> None:
        self.published: list[tuple[str, DeliverReply]] = []

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.published.append((subject, decode_reply(payload)))


class FakeNats:
    def __init__(self) -> None:
        self.js = FakeJetStream()

    def jetstream(self) -> FakeJetStream:
        return self.js


async def test_a_connector_channel_that_shows_notices_gets_one_routed_like_a_reply() -> None:
    """Not only the web chat: a connector made with the SDK whose ``notices`` holds ``resolved``
    gets the notice on its own queue, with the route's thread and metadata (the number or page
    the customer wrote to), which its ``deliver`` needs to answer from the right place."""
    opened = ConversationOpened(at=T0, customer_id="cu1", conversation_id="a", channel="pigeon", contact="coop-7")
    message = MessageReceived(
        at=T0,
        customer_id="cu1",
        conversation_id="a",
        channel="pigeon",
        message_id="m1",
        provider_message_id="p1",
        contact="coop-7",
        metadata={"roost": "r1"},
    )
    events = [stored(1, opened), stored(2, message)]
    nc = FakeNats()
    deps: Any = SimpleNamespace(store=FakeStore(events), nc=nc, notice_channels=frozenset({"chat", "pigeon"}))
    pending = PendingClosings(Clock())
    pending.apply(stored(3, resolved("a")))
    assert await ClosingNotices(deps, pending).sweep() == 1
    [(subject, notice)] = nc.js.published
    assert subject == "rd.out.pigeon"
    assert (notice.notice, notice.contact, notice.text, notice.thread_ref) == ("resolved", "coop-7", "", "p1")
    assert notice.metadata["roost"] == "r1"

    # A channel whose connector shows no notices gets none (its connector would send the empty text).
    nc.js.published.clear()
    deps.notice_channels = frozenset({"chat"})
    pending.apply(stored(4, resolved("a", T0 + timedelta(seconds=1))))
    assert await ClosingNotices(deps, pending).sweep() == 0 and nc.js.published == []


def test_the_installed_connectors_that_show_the_notice_are_its_channels() -> None:
    assert "chat" in notice_channels() and "sms" not in notice_channels()
