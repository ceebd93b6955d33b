"""The live tail's pausing (``events.tail``), with its consumers played by the test: what a
reader gets across pauses, whatever the order in which the stopping and the reading happen."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from nats.aio.msg import Msg

from events.codec import encode
from events.model import MessageReceived
from events.stored import StoredEvent
from events.tail import Tail

SUBJECT = "rd.evt.c.cu1.cv1"
NOW = datetime(2026, 12, 6, tzinfo=UTC)


def _msg(seq: int) -> Msg:
    event = MessageReceived(
        at=NOW, customer_id="cu1", conversation_id="cv1", channel="sms", message_id=f"m{seq}", provider_message_id="p"
    )
    reply = f"$JS.ACK.RD_EVENTS.tail.1.{seq}.{seq}.1700000000000000000.0"
    return Msg(_client=None, subject=SUBJECT, reply=reply, data=encode(event))  # type: ignore[arg-type]


class SlowToStop:
    """A consumer from ``start`` that takes a while to stop (a round trip to the server)."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.stopped = False

    async def unsubscribe(self) -> None:
        await asyncio.sleep(0.05)
        self.stopped = True


async def test_a_reader_that_took_everything_while_the_consumer_stopped_is_not_left_waiting() -> None:
    consumers: list[SlowToStop] = []

    async def subscribe(start: int) -> SlowToStop:
        consumers.append(SlowToStop(start))
        return consumers[-1]

    tail = Tail(pause_at=5, resume_at=1)
    await tail.start(subscribe, 1)  # type: ignore[arg-type]
    for seq in range(1, 6):
        await tail.on_msg(_msg(seq))  # the fifth pauses: the consumer starts stopping
    assert [s.seq for s in tail.drain()] == [1, 2, 3, 4, 5]  # all taken before it has stopped
    # Nothing calls the tail again (the reader waits for an event): it must go on by itself.
    for _ in range(100):
        if len(consumers) == 2:
            break
        await asyncio.sleep(0.01)
    assert consumers[0].stopped
    assert [c.start for c in consumers] == [1, 6]  # the next consumer starts after the last queued
    await tail.on_msg(_msg(6))
    assert [s.seq for s in tail.drain()] == [6]
    await tail.close()


async def test_a_slow_opener_holds_the_backlog_where_the_pause_sees_it_and_keeps_the_order() -> None:
    """Opening sealed events in the callback left the backlog in nats-py's own queue, out of
    the pause's sight (1.1 GB on a cold delivery start at 715,000 sealed events)."""
    consumers: list[SlowToStop] = []

    async def subscribe(start: int) -> SlowToStop:
        consumers.append(SlowToStop(start))
        return consumers[-1]

    release = asyncio.Event()

    async def opener(stored: StoredEvent) -> StoredEvent:
        await release.wait()  # a key store round trip, or much to decrypt
        return stored

    tail = Tail(opener=opener, pause_at=5, resume_at=1)
    await tail.start(subscribe, 1)  # type: ignore[arg-type]
    for seq in range(1, 6):
        await asyncio.wait_for(tail.on_msg(_msg(seq)), 1)  # the callback never waits for the opener
    for _ in range(100):
        if consumers[0].stopped:
            break
        await asyncio.sleep(0.01)
    assert consumers[0].stopped, "five events waiting to be opened did not pause the consumer"
    assert tail.drain() == []  # nothing is handed on unopened
    release.set()
    assert await tail.wait(timeout=1)
    taken: list[int] = []
    for _ in range(100):
        taken += [s.seq for s in tail.drain()]
        if len(taken) == 5:
            break
        await asyncio.sleep(0.01)
    assert taken == [1, 2, 3, 4, 5]
    for _ in range(100):  # all taken: the tail goes on after the last one received
        if len(consumers) == 2:
            break
        await asyncio.sleep(0.01)
    assert [c.start for c in consumers] == [1, 6]
    await tail.close()


async def test_after_a_reconnect_a_fresh_consumer_starts_after_the_last_event_queued() -> None:
    """Found by timing the NATS-outage tests: nats-py noticed its ordered consumer gone (the
    server restarted) only from missed heartbeats, and the router routed a waiting conversation
    11 s after NATS came back. The tail starts a fresh one at its next wait."""
    consumers: list[SlowToStop] = []
    reconnects = [0]

    async def subscribe(start: int) -> SlowToStop:
        consumers.append(SlowToStop(start))
        return consumers[-1]

    tail = Tail(reconnects=lambda: reconnects[0])
    await tail.start(subscribe, 1)  # type: ignore[arg-type]
    for seq in (1, 2, 3):
        await tail.on_msg(_msg(seq))
    assert [s.seq for s in tail.drain()] == [1, 2, 3]
    assert not await tail.wait(timeout=0.01)  # no reconnect: the same consumer
    assert [c.start for c in consumers] == [1]
    reconnects[0] += 1
    for _ in range(100):
        await tail.wait(timeout=0.01)
        if len(consumers) == 2:
            break
    assert consumers[0].stopped and [c.start for c in consumers] == [1, 4]
    await tail.on_msg(_msg(4))
    assert [s.seq for s in tail.drain()] == [4]
    await tail.close()
