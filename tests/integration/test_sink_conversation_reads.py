"""A helpdesk sink reads one conversation as the log tells it from that conversation's own
subject and its customer's profile subject: a customer's other conversations (months of
them) are not read for each assignment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.model import ConversationOpened, CustomerCreated, CustomerProfileUpdated, MessageReceived
from events.store import Append, EventStore, StoredEvent
from services.sinks.sdk.actions import Relaydesk

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def opened(customer: str, conv: str) -> ConversationOpened:
    return ConversationOpened(at=NOW, customer_id=customer, conversation_id=conv, channel="sms", contact="+15550001")


def received(customer: str, conv: str, n: int) -> MessageReceived:
    return MessageReceived(
        at=NOW,
        customer_id=customer,
        conversation_id=conv,
        channel="sms",
        message_id=f"msg_{conv}_{n}",
        provider_message_id=f"SM_{conv}_{n}",
        text=f"message {n}",
        language="es",
    )


async def test_a_conversation_is_read_from_its_own_subject_and_its_customers_profile(
    private: tuple[str, NATS, EventStore], uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, nc, store = private
    customer = f"cu_{uid}"
    events = [CustomerCreated(at=NOW, customer_id=customer, identity=f"sms:{uid}")]
    for n in range(20):  # an earlier conversation of the same customer
        events += [opened(customer, "cv_old")] if n == 0 else []
        events.append(received(customer, "cv_old", n))
    events += [
        CustomerProfileUpdated(at=NOW, customer_id=customer, tier="gold", preferred_language="pt", name="Ana"),
        opened(customer, "cv_new"),
        received(customer, "cv_new", 1),
    ]
    for event in events:
        await store.append(Append(event))

    read: list[str] = []
    read_direct = store.read_direct

    async def recorded(filter_subject: str, from_seq: int = 1, batch: int = 500) -> list[StoredEvent]:
        read.append(filter_subject)
        return await read_direct(filter_subject, from_seq, batch)

    monkeypatch.setattr(store, "read_direct", recorded)
    facts = await Relaydesk(store, nc, actor="sink:test").conversation(customer, "cv_new")
    assert facts is not None
    assert sorted(read) == sorted([subjects.conversation(customer, "cv_new"), subjects.customer_scope(customer)])
    assert [m.provider_message_id for m in facts.messages] == ["SM_cv_new_1"]
    assert (facts.tier, facts.customer_name, facts.channel) == ("gold", "Ana", "sms")
    assert facts.language == "es"  # the conversation's own language over the profile's
