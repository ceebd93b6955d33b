"""Intake's shortcuts keep its guarantees: a customer this process just created is recorded
without reading its (empty) history, and one written since is read, never forked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.model import ConversationOpened, CustomerCreated, InboundMessage, MessageReceived, RoutingRequested
from events.skips import SKIPPED
from events.store import EventStore
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.identity.addresses import InvalidAddress, identity_for
from services.intake import Intake
from services.intake.customer_history import CustomerHistory

pytestmark = pytest.mark.integration


def sms(sid: str, sender: str, text: str) -> InboundMessage:
    return InboundMessage(
        at=datetime.now(UTC), channel="sms", provider="twilio", provider_message_id=sid, sender=sender, text=text
    )


def phone_for(uid: str) -> str:
    return f"+1555{int(uid[:7], 16) % 10_000_000:07d}"


class SaysCreated(IdentityDirectory):
    """Says every customer it resolves was created by this call: as if a racing process
    recorded the customer's first message between our create and our first append."""

    async def resolve(self, identity: str) -> tuple[str, bool]:
        customer_id, _ = await super().resolve(identity)
        return customer_id, True


def counting_reads(intake: Intake, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    read_history = intake.read_history

    async def counted(customer_id: str) -> CustomerHistory:
        reads.append(customer_id)
        return await read_history(customer_id)

    monkeypatch.setattr(intake, "read_history", counted)
    return reads


async def test_a_new_customer_is_recorded_without_reading_its_history(
    private: tuple[str, NATS, EventStore], uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, nc, store = private
    directory = IdentityDirectory(await nc.jetstream().key_value(subjects.IDENTITY_BUCKET))
    intake = Intake(store, directory, IntakeSettings())
    reads = counting_reads(intake, monkeypatch)
    phone = phone_for(uid)

    await intake.handle_message(sms(f"SM{uid}1", phone, "my invoice is wrong"))
    assert reads == []
    await intake.handle_message(sms(f"SM{uid}2", phone, "hello?"))  # a known customer: read first
    customer_id = await directory.lookup(identity_for("sms", phone))
    assert reads == [customer_id]
    assert customer_id is not None
    kinds = [type(s.event) for s in await store.read_customer(customer_id)]
    assert kinds == [CustomerCreated, ConversationOpened, MessageReceived, RoutingRequested, MessageReceived]


async def test_a_customer_written_since_it_was_created_is_read_not_forked(
    private: tuple[str, NATS, EventStore], uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, nc, store = private
    kv = await nc.jetstream().key_value(subjects.IDENTITY_BUCKET)
    first = Intake(store, IdentityDirectory(kv), IntakeSettings())
    racing = Intake(store, SaysCreated(kv), IntakeSettings())
    reads = counting_reads(racing, monkeypatch)
    phone = phone_for(uid)

    await first.handle_message(sms(f"SM{uid}1", phone, "my invoice is wrong"))
    # Planned on an empty history, its first append's guard (expected 0 on the whole
    # customer) fails: it reads the history and continues the open conversation.
    await racing.handle_message(sms(f"SM{uid}2", phone, "hello?"))
    customer_id = await IdentityDirectory(kv).lookup(identity_for("sms", phone))
    assert customer_id is not None and reads == [customer_id]
    events = [s.event for s in await store.read_customer(customer_id)]
    assert [type(e) for e in events] == [
        CustomerCreated,
        ConversationOpened,
        MessageReceived,
        RoutingRequested,
        MessageReceived,
    ]
    assert len({e.conversation_id for e in events if isinstance(e, MessageReceived)}) == 1


async def test_identities_are_remembered_and_bad_addresses_are_not(private: tuple[str, NATS, EventStore]) -> None:
    _, nc, store = private
    directory = IdentityDirectory(await nc.jetstream().key_value(subjects.IDENTITY_BUCKET))
    intake = Intake(store, directory, IntakeSettings())
    message = sms("SM1", "+1 (212) 555-0123", "hi")
    assert intake.identity_of(message) == intake.triage(message).identity == identity_for("sms", message.sender)
    assert intake._identity.cache_info().hits >= 1
    bad = sms("SM2", "not a number", "hi")
    assert intake.identity_of(bad) is None
    with pytest.raises(InvalidAddress):
        intake.triage(bad)


class Unreachable(IdentityDirectory):
    async def secret(self) -> bytes:
        raise ConnectionError("NATS away")


async def test_a_failed_warm_up_is_logged_counted_and_not_fatal(private: tuple[str, NATS, EventStore]) -> None:
    _, nc, store = private
    intake = Intake(store, Unreachable(await nc.jetstream().key_value(subjects.IDENTITY_BUCKET)), IntakeSettings())
    before = SKIPPED.labels(where="intake.warm_up")._value.get()
    await intake.warm_up()
    assert SKIPPED.labels(where="intake.warm_up")._value.get() == before + 1
