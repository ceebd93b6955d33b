"""``events.pull.Puller`` over a real nats-server: several fetchers on one durable, each
message handed over as soon as it is there."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import APIError

from events.pull import Puller

pytestmark = pytest.mark.integration

LONG_WAIT = 30.0  # each fetch's own wait: a message held until it ends would fail the test


@contextlib.asynccontextmanager
async def durable(nc: NATS, uid: str) -> AsyncIterator[tuple[str, str]]:
    stream, durable_name = f"PULL_{uid}", "shared"
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"pull.{uid}.>"])
    await js.add_consumer(stream, ConsumerConfig(durable_name=durable_name, ack_policy=AckPolicy.EXPLICIT))
    try:
        yield stream, durable_name
    finally:
        await js.delete_stream(stream)


async def test_each_message_is_handed_over_while_other_fetchers_wait(nc: NATS, uid: str) -> None:
    """Three fetchers on one durable, a message at a time: a fetch hands over what it has
    without waiting for its batch to fill (a request without ``no_wait`` would: 30 s here)."""
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def fetch_forever(puller: Puller) -> None:
        while True:
            for msg in await puller.fetch(16, LONG_WAIT):
                await msg.ack()
                received.put_nowait(msg)

    async with durable(nc, uid) as (stream, name):
        pullers = [await Puller(nc, stream, name).start() for _ in range(3)]
        tasks = [asyncio.create_task(fetch_forever(p)) for p in pullers]
        try:
            for n in range(12):
                await nc.jetstream().publish(f"pull.{uid}.m", str(n).encode())
                msg = await asyncio.wait_for(received.get(), LONG_WAIT / 3)
                assert msg.data == str(n).encode()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for p in pullers:
                await p.unsubscribe()


async def test_a_fetch_told_others_cover_the_pending_messages_still_hands_over_at_once(nc: NATS, uid: str) -> None:
    """The case nats-py's own fetch gets wrong: its request answered "408 Requests Pending"
    (another fetcher's waiting request covers every pending message), it sends a lingering
    request and keeps what that brings until the batch fills or its wait ends, 30 s here.
    Made certain with ``max_ack_pending`` 1: messages wait on the server while one is out."""
    js = nc.jetstream()
    stream, name = f"PULL_{uid}", "shared"
    await js.add_stream(name=stream, subjects=[f"pull.{uid}.>"])
    config = ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1)
    await js.add_consumer(stream, config)
    first, second, third = [await Puller(nc, stream, name).start() for _ in range(3)]
    try:
        await js.publish(f"pull.{uid}.m", b"0")
        (held,) = await first.fetch(16, LONG_WAIT)
        for n in range(1, 4):
            await js.publish(f"pull.{uid}.m", str(n).encode())
        # Every process keeps fetching (the first too, whose request is still open).
        fetching = {first: asyncio.create_task(first.fetch(16, LONG_WAIT))}
        fetching[second] = asyncio.create_task(second.fetch(16, LONG_WAIT))  # waits, covering all three
        await _until(lambda: _num_waiting(js, stream, name), 1)
        fetching[third] = asyncio.create_task(third.fetch(16, LONG_WAIT))  # "408 Requests Pending"
        got: list[bytes] = []
        await held.ack()
        while len(got) < 3:
            done, _ = await asyncio.wait(fetching.values(), timeout=LONG_WAIT / 3, return_when=asyncio.FIRST_COMPLETED)
            assert done, f"messages held back: {got} of 3 handed over"
            for puller, task in list(fetching.items()):
                if task in done:
                    for msg in task.result():
                        got.append(msg.data)
                        await msg.ack()
                    fetching[puller] = asyncio.create_task(puller.fetch(16, LONG_WAIT))
        assert sorted(got) == [b"1", b"2", b"3"]
        for task in fetching.values():
            task.cancel()
        await asyncio.gather(*fetching.values(), return_exceptions=True)
    finally:
        for p in (first, second, third):
            await p.unsubscribe()
        await js.delete_stream(stream)


async def test_what_a_stopped_fetcher_was_brought_goes_to_another_at_once(nc: NATS, uid: str) -> None:
    """A request can stay open after its fetch returned (the server ends a one-shot request
    once nothing more can be delivered; with ``max_ack_pending`` reached it waits) and bring
    more: when that fetcher stops, those go back (nak) for another to take now, not after
    the 30 s ack wait."""
    js = nc.jetstream()
    stream, name = f"PULL_{uid}", "shared"
    await js.add_stream(name=stream, subjects=[f"pull.{uid}.>"])
    config = ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1)
    await js.add_consumer(stream, config)
    stopping, other = [await Puller(nc, stream, name).start() for _ in range(2)]
    try:
        await js.publish(f"pull.{uid}.m", b"0")
        await js.publish(f"pull.{uid}.m", b"1")
        (first,) = await stopping.fetch(16, LONG_WAIT)
        await first.ack()  # "1" goes to the request still open
        await _until(lambda: _delivered(js, stream, name), 2)
        await stopping.unsubscribe()
        (again,) = await asyncio.wait_for(other.fetch(16, LONG_WAIT), LONG_WAIT / 3)
        assert again.data == b"1"
    finally:
        await other.unsubscribe()
        await js.delete_stream(stream)


async def _delivered(js: JetStreamContext, stream: str, name: str) -> int:
    """The stream sequence of the last message the consumer handed out."""
    delivered = (await js.consumer_info(stream, name)).delivered
    return (delivered.stream_seq or 0) if delivered else 0


async def _num_waiting(js: JetStreamContext, stream: str, name: str) -> int:
    return (await js.consumer_info(stream, name)).num_waiting or 0


async def _until(probe: Callable[[], Awaitable[int]], at_least: int) -> None:
    deadline = asyncio.get_running_loop().time() + LONG_WAIT / 3
    while await probe() < at_least:
        assert asyncio.get_running_loop().time() < deadline, "the condition never came"
        await asyncio.sleep(0.02)


async def test_a_burst_comes_in_batches_and_every_message_once(nc: NATS, uid: str) -> None:
    async with durable(nc, uid) as (stream, name):
        js = nc.jetstream()
        await asyncio.gather(*(js.publish(f"pull.{uid}.m", str(n).encode()) for n in range(300)))
        puller = await Puller(nc, stream, name).start()
        seen: list[bytes] = []
        sizes: list[int] = []
        while len(seen) < 300:
            msgs = await puller.fetch(64, 5.0)
            assert msgs, "a fetch came back empty with messages waiting"
            sizes.append(len(msgs))
            for msg in msgs:
                await msg.ack()
                seen.append(msg.data)
        assert sorted(seen) == sorted(str(n).encode() for n in range(300))
        assert max(sizes) == 64
        info = await js.consumer_info(stream, name)
        assert info.num_pending == 0
        await puller.unsubscribe()


async def test_a_fetch_with_nothing_to_hand_over_returns_empty_after_its_wait(nc: NATS, uid: str) -> None:
    async with durable(nc, uid) as (stream, name):
        puller = await Puller(nc, stream, name).start()
        assert await puller.fetch(8, 0.2) == []
        await puller.unsubscribe()


async def test_a_missing_consumer_is_an_error_not_an_empty_fetch(nc: NATS, uid: str) -> None:
    async with durable(nc, uid) as (stream, _name):
        puller = await Puller(nc, stream, "nobody").start()
        with pytest.raises(APIError):
            await puller.fetch(8, 0.5)
        await puller.unsubscribe()
