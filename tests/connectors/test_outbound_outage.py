"""A provider that throttles or is down while agents reply: the outbound worker waits out a
``Retry-After`` (keeping its hold on the reply meanwhile) instead of spending its tries at once,
and a connector stopped while it retries hands the reply back instead of failing it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from connectors.sdk import Connector, DeliveryResult, ProviderRequest
from connectors.sdk.base import ConnectorSettings
from connectors.sdk.conformance import FakeProvider, read_outcomes, wait_for_outcome
from connectors.sdk.runtime import ConnectorRuntime
from connectors.sdk.tries import pause_before_retry
from events import subjects
from events.model import Channel, DeliverReply, DeliveryFailed, InboundMessage, MessageSent
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from tests.connectors.outbound_rig import a_reply, queue, short_ack_wait, sms_runtime

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[NATS]:
    server = EmbeddedNats(store_dir=tmp_path / "js")
    await server.astart()
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    await ensure_streams(client.jetstream())
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        await server.astop()


class Throttling:
    """Twilio's Messages API throttling the account: the first request is refused with 429 and
    ``Retry-After``, and so is every request sent before that time has passed."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        self.until: float | None = None
        self.answers: list[int] = []

    async def __call__(self, _request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        if self.until is None or now < self.until:
            if self.until is None:
                self.until = now + self.retry_after
            self.answers.append(429)
            body = {"code": 20429, "message": "Too Many Requests", "status": 429}
            return web.json_response(body, status=429, headers={"Retry-After": f"{self.retry_after:g}"})
        self.answers.append(201)
        return web.json_response({"sid": "SM" + "e" * 32, "status": "queued"}, status=201)


async def one_reply_through(nc: NATS, provider: Handler, contact: str, **settings: Any) -> Any:
    """One SMS reply queued to a connector whose Twilio is ``provider``, and its recorded outcome."""
    fake = FakeProvider(handler=provider)
    await fake.start()
    runtime = await sms_runtime(nc, fake, **settings)
    try:
        reply = a_reply("sms", contact)
        await queue(nc, reply)
        return await wait_for_outcome(nc.jetstream(), "sms", reply.reply_id, timeout=30)
    finally:
        await runtime.stop()
        await fake.stop()


async def test_a_throttled_reply_waits_out_retry_after_and_is_sent(nc: NATS) -> None:
    """Found by an outage audit: Twilio's 429 ``Retry-After`` was ignored. The tries (0.5 s
    backoff) were all spent inside the throttling window, so every reply an agent wrote while
    the account was throttled ended ``DeliveryFailed``, after hammering Twilio four times."""
    throttling = Throttling(retry_after=1.5)
    found = await one_reply_through(nc, throttling, "+15551230000", deliver_attempts=3, deliver_backoff=0.01)
    assert isinstance(found.recorded, MessageSent), found.report.reason
    # One refusal, then the try Twilio asked for: not a burst inside its window.
    assert throttling.answers == [429, 201]


async def test_a_retry_after_longer_than_the_ack_wait_keeps_the_reply_held(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting out a Retry-After longer than the consumer's ack wait renews the hold, so NATS
    does not hand the reply to another process meanwhile (which would send it as well) and
    this process does not give it up as lapsed."""
    short_ack_wait(monkeypatch, 2.0)
    throttling = Throttling(retry_after=4.0)
    fake = FakeProvider(handler=throttling)
    await fake.start()
    runtime = await sms_runtime(nc, fake, deliver_attempts=2, deliver_backoff=0.01)
    try:
        reply = a_reply("sms", "+15551230000")
        await queue(nc, reply)
        found = await wait_for_outcome(nc.jetstream(), "sms", reply.reply_id, timeout=20)
        info = await nc.jetstream().consumer_info(subjects.OUTBOUND_STREAM, "connector_sms")
    finally:
        await runtime.stop()
        await fake.stop()
    assert isinstance(found.recorded, MessageSent), found.report.reason
    assert throttling.answers == [429, 201]
    assert info.num_redelivered == 0


class Down(Connector):
    """A provider that is down (every call a passing failure) until ``up`` is set."""

    name: ClassVar[str] = "downmem"
    channel: ClassVar[Channel] = "chat"
    provider: ClassVar[str] = "downmem"
    up: ClassVar[bool] = False
    calls: ClassVar[list[str]] = []

    def verify(self, request: ProviderRequest) -> None:
        return None

    def parse(self, request: ProviderRequest) -> Sequence[InboundMessage]:
        return []

    async def deliver(self, reply: DeliverReply) -> DeliveryResult:
        Down.calls.append(reply.reply_id)
        if Down.up:
            return DeliveryResult.sent(f"prov-{len(Down.calls)}")
        return DeliveryResult.failed("provider 503", retryable=True)


async def test_a_reply_being_retried_when_the_connector_stops_is_handed_back_not_failed(nc: NATS) -> None:
    """Found by an outage audit: a connector stopped (a rolling update, a restart) while it
    retried a reply during a provider outage reported that reply failed at once
    (``DeliveryFailed``), though it had not used its tries: the next process never tried it."""
    Down.up, Down.calls = False, []
    settings = {"port": 0, "deliver_attempts": 10, "deliver_backoff": 0.4, "outbound_fetch_timeout": 0.3}
    first = ConnectorRuntime(Down.from_config(settings), nc)
    await first.start()
    reply = a_reply("chat", "c1")
    try:
        await queue(nc, reply)
        async with asyncio.timeout(10):
            while len(Down.calls) < 2:
                await asyncio.sleep(0.02)
    finally:
        await first.stop()
    assert await read_outcomes(nc.jetstream(), "chat", reply.reply_id) == []

    Down.up = True  # the provider is back; the next process sends the reply
    second = ConnectorRuntime(Down.from_config(settings), nc)
    await second.start()
    try:
        found = await wait_for_outcome(nc.jetstream(), "chat", reply.reply_id, timeout=20)
    finally:
        await second.stop()
    assert isinstance(found.recorded, MessageSent)
    assert not isinstance(found.recorded, DeliveryFailed)
    assert len(await read_outcomes(nc.jetstream(), "chat", reply.reply_id)) == 1


def test_the_default_tries_ride_out_a_minute_long_outage_and_pauses_stay_bounded() -> None:
    """Found by an outage audit: 4 tries 0.5 s apart (doubling) failed every reply written during
    a provider blip of more than ~3.5 s, for good. The defaults now pause, even at the shortest
    jitter, more than a minute in all before giving up, and no pause is longer than
    ``deliver_backoff_max`` (a throttled provider's own Retry-After aside)."""
    s = ConnectorSettings()
    shortest = [pause_before_retry(s, attempt, None, 0.0) for attempt in range(1, s.deliver_attempts)]
    longest = [pause_before_retry(s, attempt, None, 0.999) for attempt in range(1, s.deliver_attempts)]
    assert sum(shortest) >= 60.0
    assert max(longest) <= s.deliver_backoff_max
    assert pause_before_retry(s, 3, 45.0, 0.0) == 45.0  # the provider asked: never sooner
    assert pause_before_retry(s, 3, 3600.0, 0.0) == s.deliver_retry_after_max


class Unavailable:
    """A provider answering 503 for ``seconds`` from the first request on, then 201."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.since: float | None = None
        self.answers: list[int] = []

    async def __call__(self, _request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        if now - self.since < self.seconds:
            self.answers.append(503)
            return web.json_response({"code": 20503, "message": "Service Unavailable"}, status=503)
        self.answers.append(201)
        return web.json_response({"sid": "SM" + "f" * 32, "status": "queued"}, status=201)


async def test_a_reply_written_during_an_outage_goes_out_once_the_provider_is_back(nc: NATS) -> None:
    """The default number of tries with the pauses scaled down 10x and 75x (at least 1.4 s of
    pauses in all against a 1 s outage): the reply is sent, once, when the provider answers."""
    down = Unavailable(seconds=1.0)
    found = await one_reply_through(nc, down, "+15551230002", deliver_backoff=0.05, deliver_backoff_max=0.4)
    assert isinstance(found.recorded, MessageSent), found.report.reason
    assert down.answers.count(201) == 1 and down.answers[0] == 503
