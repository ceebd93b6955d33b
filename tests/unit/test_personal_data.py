"""Sealing and opening personal fields (events.personal), with keys held in memory."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import pytest

from events.codec import decode_log_event, encode
from events.model import (
    Attachment,
    ConversationAssigned,
    ConversationOpened,
    CustomerCreated,
    DecisionReason,
    DeliverReply,
    DeliveryFailed,
    MessageReceived,
    ReplyRequested,
    UnknownEvent,
)
from events.personal import (
    ENVELOPE,
    ERASED,
    EXPIRED,
    PERSONAL_FIELDS,
    CustomerKeys,
    KeyDestroyed,
    PersonalDataCipher,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class MemoryKeys(CustomerKeys):
    """The key store's interface over a dict (the real one is tested against nats-server)."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes | None] = {}
        self.forgotten: list[str] = []
        self.generation = 0
        self.days: dict[tuple[str, date], bytes] = {}

    async def get(self, customer_id: str) -> bytes | None:
        return self.keys.get(customer_id)

    async def get_or_create(self, customer_id: str) -> bytes:
        if customer_id not in self.keys:
            self.keys[customer_id] = os.urandom(32)
        key = self.keys[customer_id]
        if key is None:  # destroyed
            raise KeyDestroyed(customer_id)
        return key

    async def destroy(self, customer_id: str) -> bool:
        had = self.keys.get(customer_id) is not None
        self.keys[customer_id] = None
        self.generation += 1
        return had

    def forget(self, customer_id: str) -> None:
        self.forgotten.append(customer_id)
        self.generation += 1

    def forget_days_before(self, before: date) -> int:
        return 0  # nothing cached: ``days`` is the store itself

    def known(self, customer_id: str) -> bool:
        return customer_id in self.keys

    async def preload(self, *, limit: int = 0) -> int:
        return 0

    async def get_day(self, customer_id: str, day: date) -> bytes | None:
        return self.days.get((customer_id, day))

    async def get_or_create_day(self, customer_id: str, day: date) -> bytes:
        await self.get_or_create(customer_id)
        return self.days.setdefault((customer_id, day), os.urandom(32))


def message(customer: str = "cu1", text: str = "Hola, soy Ana: +34 600 111 222") -> MessageReceived:
    return MessageReceived(
        at=NOW,
        customer_id=customer,
        conversation_id="cv1",
        channel="email",
        message_id="m1",
        provider_message_id="<abc@mail>",
        text=text,
        language="es",
        attachments=(Attachment(url="https://media.example/ana.jpg", name="passport-ana.jpg", size=10),),
        metadata={"subject": "Refund for Ana Pérez", "platform": "email", "from": "ana@example.com", "auto": ""},
    )


def outside_envelopes(raw: bytes) -> bytes:
    """The encoded event without its envelopes, whose random base64 may spell anything short
    (like "Ana")."""
    return re.sub(rb"rdenc1:[A-Za-z0-9_:-]+", b"", raw)


def plaintexts(event: Any) -> bytes:
    return encode(event)


@pytest.fixture
def keys() -> MemoryKeys:
    return MemoryKeys()


async def test_seal_hides_every_personal_value_and_open_restores_the_event(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    original = message()
    sealed = await cipher.seal(original)
    raw = encode(sealed)
    clear = outside_envelopes(raw)
    for secret in (b"Ana", b"600 111 222", b"passport", b"ana@example.com", b"media.example"):
        assert secret not in clear
    assert sealed.text.startswith(ENVELOPE)
    assert sealed.metadata["platform"] == "email"  # technical, stays clear
    assert (sealed.channel, sealed.language, sealed.conversation_id) == ("email", "es", "cv1")
    decoded = decode_log_event(raw)
    assert await cipher.open(decoded) == original


async def test_every_value_gets_its_own_nonce(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    first, second = await cipher.seal(message()), await cipher.seal(message())
    assert first.text != second.text


async def test_open_after_destroy_reads_erased_and_keeps_routing_fields(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    sealed = await cipher.seal(message())
    assert await keys.destroy("cu1")
    opened = await cipher.open(sealed)
    assert opened.text == ERASED
    assert opened.attachments[0].name == ERASED
    assert opened.attachments[0].size == 10
    assert opened.metadata["subject"] == ERASED
    assert opened.metadata["platform"] == "email"
    assert (opened.channel, opened.language, opened.customer_id) == ("email", "es", "cu1")


async def test_nothing_new_is_sealed_for_a_destroyed_customer(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    await keys.destroy("cu1")
    with pytest.raises(KeyDestroyed):
        await cipher.seal(message())


async def test_a_value_sealed_for_one_customer_does_not_open_as_another(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    sealed = await cipher.seal(message("cu1"))
    moved = msgspec.structs.replace(sealed, customer_id="cu2")
    keys.keys["cu2"] = keys.keys["cu1"]  # even with the same key: the customer id is bound in
    assert (await cipher.open(moved)).text == ERASED


async def test_a_value_moved_to_another_field_does_not_open(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    sealed = await cipher.seal(message())
    swapped = msgspec.structs.replace(sealed, metadata={**sealed.metadata, "subject": sealed.text})
    assert (await cipher.open(swapped)).metadata["subject"] == ERASED


async def test_clear_values_from_older_logs_pass_through(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    old = message()
    assert await cipher.open(old) is old
    assert keys.keys == {}  # no key was looked up or made for it


async def test_sealing_off_writes_clear_values_but_still_opens_sealed_ones(keys: MemoryKeys) -> None:
    sealed = await PersonalDataCipher(keys).seal(message())
    reader = PersonalDataCipher(keys, sealing=False)
    assert await reader.seal(message()) == message()
    assert await reader.open(sealed) == message()


async def test_events_without_personal_fields_are_untouched(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    assigned = ConversationAssigned(
        at=NOW, customer_id="cu1", conversation_id="cv1", agent_id="ava", channel="sms", reason=DecisionReason(rule="x")
    )
    assert await cipher.seal(assigned) is assigned
    assert keys.keys == {}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (CustomerCreated(at=NOW, customer_id="cu1", identity="sms:+15551234567"), "identity"),
        (
            ConversationOpened(at=NOW, customer_id="cu1", conversation_id="cv1", channel="sms", contact="+155512"),
            "contact",
        ),
        (
            ReplyRequested(
                at=NOW, customer_id="cu1", conversation_id="cv1", channel="sms", reply_id="r", text="Hi Ana"
            ),
            "text",
        ),
        (
            DeliveryFailed(
                at=NOW, customer_id="cu1", conversation_id="cv1", channel="sms", reply_id="r", reason="+1555"
            ),
            "reason",
        ),
    ],
)
async def test_each_personal_field_round_trips(keys: MemoryKeys, event: Any, field: str) -> None:
    cipher = PersonalDataCipher(keys)
    sealed = await cipher.seal(event)
    assert getattr(sealed, field).startswith(ENVELOPE)
    assert await cipher.open(sealed) == event
    await keys.destroy("cu1")
    assert getattr(await cipher.open(sealed), field) == ERASED


async def test_empty_and_missing_values_stay_as_they_are(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    empty = message(text="")
    sealed = await cipher.seal(msgspec.structs.replace(empty, attachments=(Attachment(size=1),)))
    assert sealed.text == ""
    assert sealed.attachments[0].name is None


async def test_deliver_reply_round_trip(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    reply = DeliverReply(
        conversation_id="cv1",
        customer_id="cu1",
        channel="social",
        reply_id="rp1",
        contact="+34600111222",
        text="Hola Ana",
        thread_ref="wamid.1",
        metadata={"platform": "whatsapp", "phone_number_id": "123", "subject": "Ana"},
    )
    sealed = await cipher.seal_reply(reply)
    assert b"Ana" not in outside_envelopes(encode(sealed)) and b"600111222" not in encode(sealed)
    assert sealed.metadata["phone_number_id"] == "123"
    assert await cipher.open_reply(sealed) == reply


async def test_a_customer_erased_fact_makes_the_cipher_forget_cached_keys(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    raw = msgspec.json.encode(
        {"type": "customer_erased", "at": NOW.isoformat(), "customer_id": "cu1", "merged_ids": ["cu2"]}
    )
    await cipher.open(UnknownEvent(type="customer_erased", raw=raw))
    assert keys.forgotten == ["cu1", "cu2"]


def test_every_personal_field_named_exists_on_its_event() -> None:
    for cls, fields in PERSONAL_FIELDS.items():
        names = {f.name for f in msgspec.structs.fields(cls)}
        assert set(fields.strings) <= names, cls
        assert not fields.attachments or "attachments" in names
        assert not fields.metadata or "metadata" in names


async def test_retention_seals_bodies_with_a_day_key_and_expires_them(keys: MemoryKeys) -> None:
    now = datetime.now(UTC)
    writer = PersonalDataCipher(keys, message_days=30)
    recent = await writer.seal(msgspec.structs.replace(message(), at=now))
    old = await writer.seal(msgspec.structs.replace(message(), at=now - timedelta(days=31)))
    assert old.text.startswith(f"{ENVELOPE}d{(now - timedelta(days=31)):%Y%m%d}:")
    # Only bodies use day keys. (Not "starts with rdenc1:d": a customer-key ciphertext's
    # base64 starts with "d" one time in 64.)
    assert not re.match(rf"{re.escape(ENVELOPE)}d\d{{8}}:", old.metadata["subject"])
    assert old.metadata["subject"].startswith(ENVELOPE)
    # A reader without the setting opens both while the day keys stand; one with it does not.
    assert (await PersonalDataCipher(keys).open(old)).text == message().text
    assert (await writer.open(old)).text == EXPIRED
    assert (await writer.open(old)).metadata["subject"] == "Refund for Ana Pérez"
    assert (await writer.open(recent)).text == message().text
    keys.days.clear()  # the sweep erased the day keys
    assert (await PersonalDataCipher(keys).open(recent)).text == EXPIRED


async def test_bodies_written_before_retention_was_on_expire_too(keys: MemoryKeys) -> None:
    """A deployment turns ``message_days`` on after months: its older messages were sealed with
    the customer's own key (or written in clear). They read ``[expired]`` past the cutoff like
    day-key ones; before, every reader (and a rebuild of the timelines) gave them back in full."""
    now = datetime.now(UTC)
    before_retention = PersonalDataCipher(keys)  # message_days 0 when these were written
    old_sealed = await before_retention.seal(msgspec.structs.replace(message(), at=now - timedelta(days=31)))
    old_clear = msgspec.structs.replace(message("cu2"), at=now - timedelta(days=31))
    recent = await before_retention.seal(msgspec.structs.replace(message(), at=now - timedelta(days=29)))
    reader = PersonalDataCipher(keys, message_days=30)
    for opened in (
        [await reader.open(e) for e in (old_sealed, old_clear, recent)],
        await reader.open_many([old_sealed, old_clear, recent]),
    ):
        assert [e.text for e in opened] == [EXPIRED, EXPIRED, message().text]
        assert opened[0].metadata["subject"] == "Refund for Ana Pérez"  # only bodies expire
    assert (await PersonalDataCipher(keys).open(old_sealed)).text == message().text  # a reader without it
    await keys.destroy("cu1")
    assert (await reader.open(old_sealed)).text == ERASED  # erased wins


async def test_seal_many_seals_like_seal_and_puts_a_refusal_in_place(keys: MemoryKeys) -> None:
    cipher = PersonalDataCipher(keys)
    keys.keys["cu9"] = None  # erased: nothing new is sealed for them
    batch = [message("cu1"), message("cu9"), message("cu2"), message("cu1", text="again")]
    sealed = await cipher.seal_many(batch)
    assert isinstance(sealed[1], KeyDestroyed) and sealed[1].customer_id == "cu9"
    opened = [await PersonalDataCipher(keys).open(s) for s in sealed if not isinstance(s, Exception)]
    assert opened == [batch[0], batch[2], batch[3]]
    for s in sealed:
        if not isinstance(s, Exception):
            assert b"Ana" not in outside_envelopes(encode(s)) and s.metadata["platform"] == "email"


async def test_seal_many_with_retention_uses_day_keys(keys: MemoryKeys) -> None:
    writer = PersonalDataCipher(keys, message_days=30)
    now = datetime.now(UTC)
    [sealed] = await writer.seal_many([msgspec.structs.replace(message(), at=now)])
    assert not isinstance(sealed, Exception)
    assert sealed.text.startswith(f"{ENVELOPE}d{now:%Y%m%d}:")
    assert (await PersonalDataCipher(keys).open(sealed)).text == message().text


async def test_open_many_opens_sealed_clear_erased_and_day_key_values_alike(keys: MemoryKeys) -> None:
    writer = PersonalDataCipher(keys)
    now = datetime.now(UTC)
    day_sealed = await PersonalDataCipher(keys, message_days=30).seal(msgspec.structs.replace(message("cu3"), at=now))
    batch = [await writer.seal(message("cu1")), message("cu2"), await writer.seal(message("cu4")), day_sealed]
    await keys.destroy("cu4")
    reader = PersonalDataCipher(keys)
    first = await reader.open_many(batch)
    again = await reader.open_many(batch)  # every box cached now: the same answers
    for opened in (first, again):
        assert [e.text for e in opened] == [message().text, message().text, ERASED, message().text]
        assert opened[2].metadata["subject"] == ERASED and opened[2].metadata["platform"] == "email"
