"""Bounded redelivery and dead letters over a real nats-server, intake's side: a malformed or
failing message on ``rd.inbound.<channel>`` is tried a bounded number of times, terminated and
parked; the next message goes through; an operator sees it with ``relaydesk dlq``, re-drives
it and drops it. (Connector outbound and the API: ``test_dead_letters_outbound.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec
import pytest
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from connectors.sdk.deadletter import MaxDeliveriesWatch, Redelivery, ensure_consumer
from events import subjects
from events.codec import encode
from events.model import InboundMessage, MessageReceived
from events.parking import ParkedMessage, ParkingLot
from events.store import EventStore
from services.config import IntakeSettings
from services.dlq import RETRY_HEADER
from services.identity import IdentityDirectory
from services.identity.addresses import identity_for
from services.intake import Intake, register
from services.intake.settling import DURABLE, REDELIVERY, prepare
from tests.integration.dead_letters import (
    FAST,
    MALFORMED,
    cli,
    dead_letter_count,
    parked_where,
    settled,
    sms,
)
from tests.integration.system import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("quiet_logging")]


class FailingIntake(Intake):
    """Intake whose handling of some provider messages fails (a bug, a broken dependency)."""

    failing: ClassVar[set[str]] = set()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    async def handle(self, record: Any, *, subject: str | None = None) -> str | None:
        pid = getattr(record, "provider_message_id", "")
        self.calls[pid] += 1
        if pid in self.failing:
            raise RuntimeError("the identity directory is broken for this one")
        return await super().handle(record, subject=subject)


# -- intake -----------------------------------------------------------------------------------


async def test_malformed_inbound_sms_is_dead_lettered_and_redriven_from_the_cli(
    private: tuple[str, NATS, EventStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, nc, store = private
    js = nc.jetstream()
    lot = ParkingLot(js)
    directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
    before = dead_letter_count("intake", subjects.INBOUND_STREAM)
    broker = NatsBroker(url, logger=None)
    register(broker, Intake(store, directory, IntakeSettings()), redelivery=FAST)
    phone = "+15551110001"
    async with broker:
        await broker.start()
        bad = await js.publish(subjects.inbound("sms"), MALFORMED, headers={"Nats-Msg-Id": "sms:SMbroken"})
        good = sms("SMgood1", phone, "Hello, my invoice is wrong")
        await js.publish(subjects.inbound("sms"), encode(good), headers={"Nats-Msg-Id": "sms:SMgood1"})
        key = f"{subjects.INBOUND_STREAM}.{bad.seq}"

        parked = await eventually(lambda: lot.get(key))
        # The next good SMS is recorded: the malformed one blocks nothing.
        customer_id = await eventually(lambda: directory.lookup(identity_for("sms", phone)))

        async def received() -> list[Any] | None:
            events = [e.event for e in await store.read_customer(customer_id)]
            return events if any(isinstance(e, MessageReceived) for e in events) else None

        await eventually(received)

        # Undecodable: parked at its first delivery, terminated, never handed out again.
        assert parked.kind == "dead_letter" and parked.reader == "intake"
        assert parked.deliveries == 1
        assert parked.subject == subjects.inbound("sms")
        assert parked.data == MALFORMED
        assert parked.headers.get("Nats-Msg-Id") == "sms:SMbroken"
        assert "Error" in parked.error
        info = await eventually(lambda: settled(js, subjects.INBOUND_STREAM, DURABLE))
        assert info.num_redelivered == 0
        assert info.config.max_deliver == FAST.max_deliver
        assert dead_letter_count("intake", subjects.INBOUND_STREAM) == before + 1

        code, out = await cli(capsys, "dlq", "list", "--json", "--nats-url", url)
        assert code == 0
        listed = json.loads(out)
        assert [p["key"] for p in listed["parked"]] == [key]
        assert listed["parked"][0]["kind"] == "dead_letter" and listed["parked"][0]["retryable"]

        code, out = await cli(capsys, "dlq", "list", "--nats-url", url)
        assert code == 0 and key in out and "dead_letter" in out

        code, out = await cli(capsys, "dlq", "show", key, "--json", "--nats-url", url)
        assert code == 0
        shown = json.loads(out)
        assert shown["data"] == MALFORMED.decode() and shown["headers"]["Nats-Msg-Id"] == "sms:SMbroken"

        # Retry: a fresh copy on the original subject (not swallowed by the 48 h dedupe
        # window), the record dropped. It still does not decode, so it is parked again, as
        # a new stream message that says what it retries.
        code, out = await cli(capsys, "dlq", "retry", key, "--nats-url", url)
        assert code == 0, out
        assert await lot.get(key) is None
        again = await eventually(lambda: parked_where(lot, lambda r: r.headers.get(RETRY_HEADER) == key))
        assert again.seq > bad.seq and again.subject == subjects.inbound("sms")
        assert again.headers["Nats-Msg-Id"] == f"retry:{key}:1" and again.data == MALFORMED

        code, out = await cli(capsys, "dlq", "drop", again.key, "--nats-url", url)
        assert code == 0
        assert await lot.list() == []
        code, _ = await cli(capsys, "dlq", "drop", again.key, "--nats-url", url)
        assert code == 1  # nothing there any more: said, not silently fine


async def test_a_message_that_keeps_failing_is_tried_a_bounded_number_of_times_then_parked(
    private: tuple[str, NATS, EventStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, nc, store = private
    js = nc.jetstream()
    lot = ParkingLot(js)
    directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
    FailingIntake.failing = {"SMpoison"}
    intake = FailingIntake(store, directory, IntakeSettings())
    broker = NatsBroker(url, logger=None)
    register(broker, intake, redelivery=FAST)
    async with broker:
        await broker.start()
        poison = await js.publish(
            subjects.inbound("sms"), encode(sms("SMpoison", "+15551110002", "hi")), headers={"Nats-Msg-Id": "sms:p"}
        )
        key = f"{subjects.INBOUND_STREAM}.{poison.seq}"
        parked = await eventually(lambda: lot.get(key))
        assert parked.deliveries == FAST.max_deliver
        assert "identity directory is broken" in parked.error
        await eventually(lambda: settled(js, subjects.INBOUND_STREAM, DURABLE))  # terminated: not coming back
        assert intake.calls["SMpoison"] == FAST.max_deliver
        # Nothing recorded since: intake's /readyz counts from its first failure (health.checks).
        assert intake.failing_since is not None and "identity directory is broken" in intake.last_failure

        # Fixed: the operator re-drives it and it is recorded.
        FailingIntake.failing = set()
        code, out = await cli(capsys, "dlq", "retry", key, "--nats-url", url)
        assert code == 0, out
        customer_id = await eventually(lambda: directory.lookup(identity_for("sms", "+15551110002")))
        assert customer_id
        assert await lot.list() == []

        async def recovered() -> bool:
            return intake.failing_since is None  # a message recorded: no longer failing

        await eventually(recovered)

        code, out = await cli(capsys, "status", "--json", "--nats-url", url)
        assert code == 0
        status = json.loads(out)
        assert status["nats"]["reachable"] is True
        streams = {s["stream"]: s for s in status["streams"]}
        assert streams[subjects.INBOUND_STREAM]["messages"] == 2
        intake_consumer = next(c for c in status["consumers"] if c["consumer"] == DURABLE)
        assert intake_consumer["redelivered"] == 0 and intake_consumer["max_deliver"] == FAST.max_deliver
        assert status["parked"] == {"quarantined": 0, "dead_letter": 0}


async def test_status_exits_1_when_nats_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    from services.bus.embedded import free_port

    code, out = await cli(capsys, "status", "--json", "--nats-url", f"nats://127.0.0.1:{free_port()}")
    assert code == 1
    assert json.loads(out)["nats"]["reachable"] is False


async def test_an_older_durable_gets_the_bounded_settings_on_start(private: tuple[str, NATS, EventStore]) -> None:
    _, nc, _ = private
    js = nc.jetstream()
    # What an older version made: redelivered forever.
    await js.add_consumer(
        subjects.INBOUND_STREAM,
        ConsumerConfig(
            durable_name=DURABLE,
            filter_subject=subjects.INBOUND_ALL,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1,
        ),
    )
    watch = await prepare(nc)
    try:
        info = await js.consumer_info(subjects.INBOUND_STREAM, DURABLE)
        assert info.config.max_deliver == REDELIVERY.max_deliver
        assert not info.config.backoff and info.config.ack_wait == REDELIVERY.ack_wait
        assert info.config.filter_subject == subjects.INBOUND_ALL  # the rest is kept
        # Already right: nothing to do.
        from services.intake.settling import consumer_config

        assert await ensure_consumer(js, subjects.INBOUND_STREAM, consumer_config()) == "unchanged"
    finally:
        await watch.stop()


async def nak_deliveries(sub: Any, wanted: int, timeout: float = 30.0) -> int:
    """Fetch the consumer's message and hand it back (nak) until it was delivered ``wanted``
    times, then pull once more: how many times it was delivered. A deadline, not a count of
    fetches: a fetch may time out on a loaded machine (a delivery it missed comes again after
    the ack wait). The last pull is what a consumer at its max deliveries answers with nothing,
    and the server's max-deliveries advisory comes only then."""
    deliveries = 0

    async def pull() -> None:
        nonlocal deliveries
        for msg in await sub.fetch(1, timeout=1.0):
            deliveries += 1
            await msg.nak()

    async with asyncio.timeout(timeout):
        while deliveries < wanted:
            with contextlib.suppress(TimeoutError):
                await pull()
    with contextlib.suppress(TimeoutError):
        await pull()
    return deliveries


async def test_a_message_the_server_stops_redelivering_is_parked_from_the_advisory(
    private: tuple[str, NATS, EventStore],
) -> None:
    # A reader that crashes on a message every time never gets to park it itself: the
    # server's max-deliveries advisory does.
    _, nc, _ = private
    js = nc.jetstream()
    lot = ParkingLot(js)
    bounded = Redelivery(max_deliver=2, retry_delays=(0.05,), ack_wait=5.0)
    config = bounded.apply(
        ConsumerConfig(durable_name="crashy", filter_subject=subjects.inbound("probe"), ack_policy=AckPolicy.EXPLICIT)
    )
    assert await ensure_consumer(js, subjects.INBOUND_STREAM, config) == "created"
    watch = MaxDeliveriesWatch(nc, js, subjects.INBOUND_STREAM, "crashy", "crashy-reader")
    await watch.start()
    try:
        ack = await js.publish(subjects.inbound("probe"), b"crashes its reader")
        sub = await js.pull_subscribe(subjects.inbound("probe"), durable="crashy", stream=subjects.INBOUND_STREAM)
        # "crashed": handed back, never terminated by the reader; not delivered a third time
        assert await nak_deliveries(sub, 2) == 2
        parked = await eventually(lambda: lot.get(f"{subjects.INBOUND_STREAM}.{ack.seq}"))
        assert parked.reader == "crashy-reader" and parked.deliveries == 2
        assert parked.data == b"crashes its reader"
        await sub.unsubscribe()
    finally:
        await watch.stop()


class _CannotReadMessages:
    """A JetStream context whose role may not read single messages (connectors may not
    `STREAM.MSG.GET` their outbound stream): NATS answers a refused request with silence."""

    def __init__(self, js: Any) -> None:
        self._js = js

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def get_msg(self, *args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("permission refused: no answer")


async def test_a_dead_letter_its_reader_cannot_read_is_parked_without_payload_and_retried_from_the_stream(
    private: tuple[str, NATS, EventStore],
) -> None:
    from services.dlq import DeadLetters

    _, nc, _ = private
    js = nc.jetstream()
    lot = ParkingLot(js)
    bounded = Redelivery(max_deliver=2, retry_delays=(0.05,), ack_wait=5.0)
    config = bounded.apply(
        ConsumerConfig(durable_name="blind", filter_subject=subjects.inbound("blind"), ack_policy=AckPolicy.EXPLICIT)
    )
    assert await ensure_consumer(js, subjects.INBOUND_STREAM, config) == "created"
    watch = MaxDeliveriesWatch(nc, _CannotReadMessages(js), subjects.INBOUND_STREAM, "blind", "blind-reader")  # type: ignore[arg-type]
    await watch.start()
    try:
        ack = await js.publish(subjects.inbound("blind"), b"crashes a reader that cannot read it back")
        sub = await js.pull_subscribe(subjects.inbound("blind"), durable="blind", stream=subjects.INBOUND_STREAM)
        assert await nak_deliveries(sub, 2) == 2
        key = f"{subjects.INBOUND_STREAM}.{ack.seq}"
        parked = await eventually(lambda: lot.get(key))
        assert parked.data == b"" and parked.subject == ""  # parked all the same, payload left in the stream
        result = await DeadLetters(nc).retry(key, actor="test")
        assert result["subject"] == subjects.inbound("blind")
        again = await js.get_msg(subjects.INBOUND_STREAM, result["seq"])
        assert again.data == b"crashes a reader that cannot read it back"
        assert await lot.get(key) is None
        await sub.unsubscribe()
    finally:
        await watch.stop()


async def test_a_message_naming_another_channel_than_its_subject_is_parked_not_recorded(
    private: tuple[str, NATS, EventStore],
) -> None:
    """Found by an audit: the SMS connector's NATS user published a message naming channel
    email on ``rd.inbound.sms``, and intake opened an email conversation with whatever address
    it named (an agent's reply would have been mailed there)."""
    url, nc, store = private
    js = nc.jetstream()
    lot = ParkingLot(js)
    directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
    broker = NatsBroker(url, logger=None)
    register(broker, Intake(store, directory, IntakeSettings()), redelivery=FAST)
    forged = InboundMessage(
        at=datetime.now(UTC),
        channel="email",
        provider="smtp",
        provider_message_id="<forged@example.com>",
        sender="victim.ceo@example.com",
        text="please send me the invoice",
    )
    async with broker:
        await broker.start()
        bad = await js.publish(subjects.inbound("sms"), encode(forged), headers={"Nats-Msg-Id": "sms:forged"})
        await js.publish(
            subjects.inbound("sms"), encode(sms("SMafter", "+15551110002", "hi")), headers={"Nats-Msg-Id": "sms:after"}
        )
        parked = await eventually(lambda: lot.get(f"{subjects.INBOUND_STREAM}.{bad.seq}"))
        assert "names channel 'email' but was published on rd.inbound.sms" in parked.error
        assert parked.deliveries == 1
        await eventually(lambda: directory.lookup(identity_for("sms", "+15551110002")))  # the rest goes on
        assert await directory.lookup(identity_for("email", "victim.ceo@example.com")) is None


async def test_dlq_shows_parked_data_and_errors_as_they_are(
    private: tuple[str, NATS, EventStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """A provider's payload or an error naming a table (``[intake] …``) is shown as it is: the
    text went through rich markup, so ``[intake]`` vanished from what the operator read and a
    payload with ``[/b]`` in it ended ``dlq show`` and ``dlq list`` in a MarkupError traceback."""
    url, nc, _ = private
    lot = ParkingLot(nc.jetstream())
    record = ParkedMessage(
        stream=subjects.INBOUND_STREAM,
        seq=424242,
        subject=subjects.inbound("sms"),
        kind="dead_letter",
        reader="intake",
        error="[intake] cannot read it: closing [/b] tag",
        parked_at=datetime.now(UTC),
        data=b'{"text": "see [/b] and [red]"}',
    )
    await lot.park(record)
    code, out = await cli(capsys, "dlq", "show", record.key, "--nats-url", url)
    assert code == 0
    assert '"see [/b] and [red]"' in out and "[intake] cannot read it: closing [/b] tag" in out, out
    code, out = await cli(capsys, "dlq", "list", "--nats-url", url)
    assert code == 0 and "[intake] cannot read it: closing [/b] tag" in out, out


async def test_status_shows_a_leader_named_like_markup_as_it_is(
    private: tuple[str, NATS, EventStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """``[runner] instance_id`` is free text: ``router-[/b]`` ended ``relaydesk status`` in a
    MarkupError traceback, and ``[a]`` vanished from the holder's name."""
    url, nc, _ = private
    kv = await nc.jetstream().key_value(subjects.LEASE_BUCKET)
    await kv.put("router", msgspec.json.encode({"holder": "router-[a]-[/b]", "expires": time.time() + 600}))
    code, out = await cli(capsys, "status", "--nats-url", url)
    assert code == 0
    assert "router-[a]-[/b]" in out, out
