"""Crypto-shredding over a real nats-server: the log holds ciphertext, readers see clear text,
and after the customer's key is destroyed the same reads give ``[erased]``."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import decode_reply
from events.model import (
    Attachment,
    ConversationOpened,
    CustomerCreated,
    DeliverReply,
    MessageReceived,
    RoutingRequested,
)
from events.model import Requirements as Req
from events.personal import ERASED, EXPIRED, KEYS_STREAM, CustomerKeys, KeyDestroyed, PersonalDataCipher, key_subject
from events.store import Append, EventStore, StoredEvent
from events.streams import ensure_streams
from services.api.reply_routing import queue
from services.bus.embedded import EmbeddedNats
from services.retention import sweep
from tests.integration.system import eventually

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PHONE = "+15557654321"
NAME = "Zelda Quixote-Marsh"
TEXT = "my card ending 4242 was charged twice"


def history(customer: str, conversation: str) -> list[Append]:
    return [
        Append(CustomerCreated(at=NOW, customer_id=customer, identity=f"sms:{PHONE}"), expected=0),
        Append(
            ConversationOpened(at=NOW, customer_id=customer, conversation_id=conversation, channel="sms", contact=PHONE)
        ),
        Append(
            MessageReceived(
                at=NOW,
                customer_id=customer,
                conversation_id=conversation,
                channel="sms",
                message_id="m1",
                provider_message_id="SM1",
                text=TEXT,
                language="en",
                attachments=(Attachment(name=f"{NAME}.pdf", content_type="application/pdf"),),
                metadata={"platform": "sms", "sender_name": NAME},
            )
        ),
        Append(
            RoutingRequested(
                at=NOW,
                customer_id=customer,
                conversation_id=conversation,
                channel="sms",
                requirements=Req(skills={"billing": 2}, language="en"),
            )
        ),
    ]


async def append_in_order(store: EventStore, items: list[Append]) -> None:
    for item in items:
        await store.append(item)


def sealed_store(nc: NATS) -> EventStore:
    js = nc.jetstream()
    return EventStore(nc, js, cipher=PersonalDataCipher(CustomerKeys(js)))


async def raw_payloads(nc: NATS, customer: str) -> list[bytes]:
    """The customer's messages exactly as RD_EVENTS holds them (no store, no cipher)."""
    js = nc.jetstream()
    out: list[bytes] = []
    seq = 1
    while True:
        try:
            raw = await js.get_msg(
                subjects.EVENTS_STREAM, seq=seq, subject=subjects.customer_filter(customer), next=True, direct=True
            )
        except nats.js.errors.NotFoundError:
            return out
        assert raw.data is not None and raw.seq is not None
        out.append(raw.data)
        seq = raw.seq + 1


def secrets_in(data: bytes) -> list[str]:
    # Outside the envelopes, whose random base64 may spell anything short by chance.
    clear = re.sub(rb"rdenc1:(d[0-9]{8}:)?[A-Za-z0-9_-]+", b"", data)
    return [s for s in (PHONE, NAME, TEXT, "4242") if s.encode() in clear]


async def test_the_log_holds_no_plaintext_and_reads_back_clear(nc: NATS, uid: str) -> None:
    customer, conversation = f"cu{uid}", f"cv{uid}"
    store = sealed_store(nc)
    await append_in_order(store, history(customer, conversation))

    payloads = await raw_payloads(nc, customer)
    assert len(payloads) == 4
    assert [secrets_in(p) for p in payloads] == [[], [], [], []]
    assert b'"language":"en"' in payloads[2] and b'"billing":2' in payloads[3]  # routing data stays clear

    # A fresh process (empty key cache) reads the clear text back.
    events = [s.event for s in await sealed_store(nc).read_customer(customer)]
    received = events[2]
    assert isinstance(received, MessageReceived)
    assert received.text == TEXT
    assert received.metadata == {"platform": "sms", "sender_name": NAME}
    assert received.attachments[0].name == f"{NAME}.pdf"
    assert isinstance(events[1], ConversationOpened) and events[1].contact == PHONE

    # A reader without a cipher (the router) sees routing data and no personal data.
    plain = [s.event for s in await EventStore(nc, nc.jetstream()).read_customer(customer)]
    assert isinstance(plain[2], MessageReceived) and plain[2].text.startswith("rdenc1:")
    assert isinstance(plain[3], RoutingRequested) and plain[3].requirements.skills == {"billing": 2}


async def test_after_destroy_the_same_reads_give_erased(nc: NATS, uid: str) -> None:
    customer, other = f"cu{uid}", f"cx{uid}"
    writer = sealed_store(nc)
    await append_in_order(writer, history(customer, f"cv{uid}") + history(other, f"cw{uid}"))
    reader = sealed_store(nc)
    before = [s.event for s in await reader.read_customer(customer)]
    assert isinstance(before[2], MessageReceived) and before[2].text == TEXT

    keys = CustomerKeys(nc.jetstream())
    assert await keys.destroy(customer) is True
    assert await keys.destroy(customer) is False  # nothing left to destroy
    assert reader.cipher is not None
    reader.cipher.keys.forget(customer)  # in a service, reading the CustomerErased fact does this

    after = [s.event for s in await reader.read_customer(customer)]
    created, opened, received, routing = after
    assert isinstance(created, CustomerCreated) and created.identity == ERASED
    assert isinstance(opened, ConversationOpened) and opened.contact == ERASED and opened.channel == "sms"
    assert isinstance(received, MessageReceived)
    assert (received.text, received.metadata["sender_name"], received.attachments[0].name) == (ERASED,) * 3
    assert (received.language, received.metadata["platform"], received.provider_message_id) == ("en", "sms", "SM1")
    assert isinstance(routing, RoutingRequested) and routing.requirements == before[3].requirements  # type: ignore[union-attr]

    # The other customer is untouched; the erased one never gets a key again.
    assert isinstance((await reader.read_customer(other))[2].event, MessageReceived)
    assert (await reader.read_customer(other))[2].event.text == TEXT  # type: ignore[union-attr]
    assert await CustomerKeys(nc.jetstream()).get(customer) is None
    with pytest.raises(KeyDestroyed):  # a process that had not cached the old key
        await sealed_store(nc).append(history(customer, f"cz{uid}")[1])


async def test_a_tail_opens_what_it_delivers(nc: NATS, uid: str) -> None:
    customer = f"cu{uid}"
    store = sealed_store(nc)
    start = await store.last_seq() + 1
    tail = await sealed_store(nc).tail(subjects.customer_filter(customer), start)
    try:
        await store.append_many(history(customer, f"cv{uid}"))
        seen: list[StoredEvent] = []

        async def all_four() -> bool:
            seen.extend(tail.drain())
            return len(seen) >= 4

        await eventually(all_four)
        texts = [s.event.text for s in seen if isinstance(s.event, MessageReceived)]
        assert texts == [TEXT]
    finally:
        await tail.close()


async def test_concurrent_creators_agree_on_one_key(nats_url: str, uid: str) -> None:
    clients = [await nats.connect(nats_url) for _ in range(3)]
    try:
        await ensure_streams(clients[0].jetstream())
        stores = [CustomerKeys(c.jetstream()) for c in clients]
        keys = await asyncio.gather(*(s.get_or_create(f"cu{uid}") for s in stores for _ in range(5)))
        assert len(set(keys)) == 1 and len(keys[0]) == 32
        assert await stores[0].system_key("identity") == await stores[1].system_key("identity")
        assert await stores[0].system_key("identity") != keys[0]
    finally:
        for c in clients:
            await c.drain()


@pytest.fixture
async def own_server(clean_nats: EmbeddedNats) -> AsyncIterator[tuple[NATS, Path]]:
    client = await nats.connect(clean_nats.url)
    await ensure_streams(client.jetstream())
    try:
        yield client, clean_nats.store_dir
    finally:
        await client.drain()


def disk_holds(root: Path, needle: bytes) -> bool:
    return any(needle in p.read_bytes() for p in root.rglob("*") if p.is_file())


async def test_destroy_overwrites_the_key_on_disk(own_server: tuple[NATS, Path]) -> None:
    nc, store_dir = own_server
    keys = CustomerKeys(nc.jetstream())
    key = await keys.get_or_create("cu_disk")
    as_stored = base64.b64encode(key)  # a key record keeps its key base64-encoded (JSON)
    keys_dir = store_dir / "jetstream" / "$G" / "streams" / KEYS_STREAM

    async def on_disk() -> bool:
        return disk_holds(keys_dir, as_stored)

    await eventually(on_disk)  # the test can see a key on disk when there is one
    assert await keys.destroy("cu_disk")

    async def gone() -> bool:
        return not disk_holds(keys_dir, as_stored)

    await eventually(gone)
    info = await nc.jetstream().stream_info(KEYS_STREAM, subjects_filter=key_subject("cu_disk"))
    assert info.state.subjects == {key_subject("cu_disk"): 1}  # the tombstone


def dated_body(customer: str, uid: str, at: datetime, n: int) -> MessageReceived:
    """A customer message of day ``at`` (sealed with that day's key under ``message_days``)."""
    return MessageReceived(
        at=at,
        customer_id=customer,
        conversation_id=f"cv{uid}",
        channel="sms",
        message_id=f"m{n}",
        provider_message_id=f"SM{n}",
        text=f"{TEXT} #{n}",
        language="en",
        metadata={"sender_name": NAME},
    )


async def test_retention_expires_old_message_bodies_and_keeps_the_rest(nc: NATS, uid: str) -> None:
    customer = f"cu{uid}"
    js = nc.jetstream()
    today = datetime.now(UTC)
    old_day = today - timedelta(days=40)

    def body(at: datetime, n: int) -> MessageReceived:
        return dated_body(customer, uid, at, n)

    writer = EventStore(nc, js, cipher=PersonalDataCipher(CustomerKeys(js), message_days=30))
    await append_in_order(writer, [Append(body(old_day, 1)), Append(body(today, 2))])
    raw = await raw_payloads(nc, customer)
    assert f'"text":"rdenc1:d{old_day:%Y%m%d}:'.encode() in raw[0] and secrets_in(raw[0]) == []

    def texts(events: list[StoredEvent]) -> list[tuple[str, str]]:
        return [(e.event.text, e.event.metadata["sender_name"]) for e in events if isinstance(e.event, MessageReceived)]

    unconfigured = EventStore(nc, js, cipher=PersonalDataCipher(CustomerKeys(js)))
    assert texts(await unconfigured.read_customer(customer)) == [(f"{TEXT} #1", NAME), (f"{TEXT} #2", NAME)]
    configured = EventStore(nc, js, cipher=PersonalDataCipher(CustomerKeys(js), message_days=30))
    assert texts(await configured.read_customer(customer)) == [(EXPIRED, NAME), (f"{TEXT} #2", NAME)]

    assert await sweep(js, 30) >= 1  # the old day's key is erased; today's stays
    fresh = EventStore(nc, js, cipher=PersonalDataCipher(CustomerKeys(js)))
    assert texts(await fresh.read_customer(customer)) == [(EXPIRED, NAME), (f"{TEXT} #2", NAME)]

    # Erasing the customer takes their day keys too.
    assert await CustomerKeys(js).destroy(customer)
    info = await js.stream_info(KEYS_STREAM, subjects_filter=f"{key_subject(customer)}.>")
    assert not info.state.subjects
    gone = EventStore(nc, js, cipher=PersonalDataCipher(CustomerKeys(js)))
    assert texts(await gone.read_customer(customer)) == [(ERASED, ERASED), (ERASED, ERASED)]  # erased wins


async def test_a_long_running_process_drops_day_keys_once_they_pass_retention(
    nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One day key per customer and day was cached for the process's life: the cache grew by
    every active customer every day. Once a day is past retention its key is dropped."""
    from events.personal import cipher as cipher_module
    from events.personal.keys import day_subject

    customer = f"cu{uid}"
    js = nc.jetstream()
    today = datetime.now(UTC)
    earlier = today - timedelta(days=10)
    keys = CustomerKeys(js)
    store = EventStore(nc, js, cipher=PersonalDataCipher(keys, message_days=30))

    def body(at: datetime, n: int) -> Append:
        return Append(dated_body(customer, uid, at, n))

    await append_in_order(store, [body(earlier, 1), body(today, 2)])
    cached = keys._cache
    assert day_subject(customer, earlier.date()) in cached and day_subject(customer, today.date()) in cached
    # 25 days on, the earlier day is past the 30 days kept; today's is not.
    later = today.date() + timedelta(days=25)
    monkeypatch.setattr(cipher_module, "retention_cutoff", lambda days, at=None: later - timedelta(days=days))
    await append_in_order(store, [body(today, 3)])
    assert day_subject(customer, earlier.date()) not in cached
    assert day_subject(customer, today.date()) in cached
    texts = [e.event.text for e in await store.read_customer(customer) if isinstance(e.event, MessageReceived)]
    assert texts == [EXPIRED, f"{TEXT} #2", f"{TEXT} #3"]


async def test_a_replay_of_many_customers_loads_their_keys_at_once(nc: NATS, uid: str) -> None:
    writer = sealed_store(nc)
    start = await writer.last_seq() + 1
    customers = [f"cu{uid}n{i}" for i in range(80)]
    await writer.append_many([history(c, f"cv{uid}n{i}")[2] for i, c in enumerate(customers)])
    reader = sealed_store(nc)
    assert reader.cipher is not None and not reader.cipher.keys.preloaded
    texts = {
        s.event.customer_id: s.event.text
        for s in await reader.read(subjects.EVENTS_ALL, start)
        if isinstance(s.event, MessageReceived)
    }
    assert texts == dict.fromkeys(customers, TEXT)
    assert reader.cipher.keys.preloaded  # one pass over RD_KEYS, not 80 gets


async def test_a_preloaded_creator_and_a_plain_one_agree_on_a_new_key(nc: NATS, uid: str) -> None:
    preloaded, plain = CustomerKeys(nc.jetstream()), CustomerKeys(nc.jetstream())
    await preloaded.preload()
    assert preloaded.preloaded
    first, second = await asyncio.gather(preloaded.get_or_create(f"cu{uid}"), plain.get_or_create(f"cu{uid}"))
    assert first == second
    # Made by another process after the preload: found on the conflict, not replaced.
    made_later = await plain.get_or_create(f"cx{uid}")
    assert await preloaded.get_or_create(f"cx{uid}") == made_later


async def test_a_queued_reply_holds_no_plaintext_and_opens_for_the_connector(nc: NATS, uid: str) -> None:
    js = nc.jetstream()
    channel = f"t{uid}"
    reply = DeliverReply(
        conversation_id=f"cv{uid}",
        customer_id=f"cu{uid}",
        channel=channel,
        reply_id=f"rp{uid}",
        contact=PHONE,
        text=f"Dear {NAME}, {TEXT}",
        metadata={"platform": "sms", "subject": NAME},
    )
    await queue(nc, reply, PersonalDataCipher(CustomerKeys(js)))
    raw = await js.get_last_msg(subjects.OUTBOUND_STREAM, subjects.outbound(channel))
    try:
        assert raw.data is not None and secrets_in(raw.data) == []
        queued = decode_reply(raw.data)
        assert queued.metadata["platform"] == "sms" and queued.reply_id == reply.reply_id
        connector = PersonalDataCipher(CustomerKeys(js), sealing=False)  # as connectors/sdk/outbound.py
        assert await connector.open_reply(queued) == reply
    finally:
        await js.delete_msg(subjects.OUTBOUND_STREAM, int(raw.seq or 0))


async def test_append_many_refuses_an_erased_customer_after_appending_the_rest(nc: NATS, uid: str) -> None:
    erased, other = f"cu{uid}e", f"cu{uid}o"
    await CustomerKeys(nc.jetstream()).destroy(erased)
    store = sealed_store(nc)
    with pytest.raises(KeyDestroyed):
        await store.append_many([*history(erased, f"cv{uid}e")[1:3], *history(other, f"cv{uid}o")])
    assert not await store.read_customer(erased)
    texts = [s.event.text for s in await store.read_customer(other) if isinstance(s.event, MessageReceived)]
    assert texts == [TEXT]
