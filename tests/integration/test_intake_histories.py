"""Intake reads a returning customer's history on from where it last read it, over a real
NATS: each message costs what was appended since, not the customer's whole past, and what
others appended meanwhile (a resolution, an erasure) counts as a whole read would count it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.model import (
    ConversationOpened,
    ConversationResolved,
    CustomerCreated,
    CustomerErased,
    CustomersMerged,
    MessageReceived,
)
from events.store import Append, EventStore, StoredEvent
from services.config import IntakeSettings
from services.identity import IdentityDirectory
from services.identity.addresses import identity_for
from services.intake import Intake
from services.intake.customer_history import fold_history
from services.intake.histories import Histories
from tests.integration.test_intake_fast_paths import phone_for, sms

pytestmark = pytest.mark.integration


async def an_intake(nc: NATS, store: EventStore) -> tuple[Intake, IdentityDirectory]:
    directory = IdentityDirectory(await nc.jetstream().key_value(subjects.IDENTITY_BUCKET))
    return Intake(store, directory, IntakeSettings()), directory


def recording_reads(intake: Intake, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(after, events returned) for each read intake makes of a customer's subjects."""
    reads: list[tuple[int, int]] = []
    store = intake.histories.store
    read = store.read_customer_direct

    async def recorded(customer_id: str, *, after: int = 0) -> list[StoredEvent]:
        got = await read(customer_id, after=after)
        reads.append((after, len(got)))
        return got

    monkeypatch.setattr(store, "read_customer_direct", recorded)
    return reads


async def test_a_returning_customer_costs_what_was_appended_since_not_its_whole_history(
    private: tuple[str, NATS, EventStore], uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, nc, store = private
    intake, directory = await an_intake(nc, store)
    reads = recording_reads(intake, monkeypatch)
    phone = phone_for(uid)

    await intake.handle_message(sms(f"SM{uid}1", phone, "my invoice is wrong"))  # new: nothing read
    await intake.handle_message(sms(f"SM{uid}2", phone, "the invoice is still wrong"))
    await intake.handle_message(sms(f"SM{uid}3", phone, "please check the invoice"))
    customer_id = await directory.lookup(identity_for("sms", phone))
    assert customer_id is not None
    log = await store.read_customer(customer_id)
    # The first read takes the 4 events of the first message; the next, only the message after.
    assert reads == [(0, 4), (log[3].seq, 1)]

    # Someone else (an agent) resolves the conversation: the next message reads that too and
    # opens a new conversation, as a whole read would have it.
    first = log[1].event.conversation_id  # type: ignore[union-attr]
    await store.append(
        Append(ConversationResolved(at=datetime.now(UTC), customer_id=customer_id, conversation_id=first))
    )
    await intake.handle_message(sms(f"SM{uid}4", phone, "and now my refund"))
    assert reads[2] == (log[4].seq, 2)  # the third message, and the resolution
    received = [s.event for s in await store.read_customer(customer_id) if isinstance(s.event, MessageReceived)]
    assert [m.conversation_id == first for m in received] == [True, True, True, False]


async def test_an_erasure_on_the_log_drops_what_was_kept_and_reads_the_history_whole(
    private: tuple[str, NATS, EventStore], uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, nc, store = private
    intake, directory = await an_intake(nc, store)
    reads = recording_reads(intake, monkeypatch)
    phone = phone_for(uid)
    await intake.handle_message(sms(f"SM{uid}1", phone, "my invoice is wrong"))
    await intake.handle_message(sms(f"SM{uid}2", phone, "the invoice is still wrong"))
    customer_id = await directory.lookup(identity_for("sms", phone))
    assert customer_id is not None
    await store.append(Append(CustomerErased(at=datetime.now(UTC), customer_id=customer_id, reason="test")))
    before = len(reads)
    await intake.handle_message(sms(f"SM{uid}3", phone, "hello again"))
    after_last, new = reads[before]
    assert after_last > 0 and new == 2  # the second message and the erasure...
    assert reads[before + 1] == (0, 6)  # ...then everything, read whole


async def test_the_histories_kept_are_bounded(private: tuple[str, NATS, EventStore], uid: str) -> None:
    _, nc, store = private
    intake, _ = await an_intake(nc, store)
    intake.histories.limit = 2
    for n in range(4):
        phone = f"+1555{(int(uid[:6], 16) + n) % 10_000_000:07d}"
        for m in range(2):  # the second message reads (and keeps) the customer's history
            await intake.handle_message(sms(f"SM{uid}{n}{m}", phone, "my invoice is wrong"))
    assert len(intake.histories) == 2


async def test_a_history_unused_for_a_while_is_dropped(private: tuple[str, NATS, EventStore], uid: str) -> None:
    """Intake does not follow the log: what it keeps of a customer (the last texts of open
    conversations) goes after ``idle_s`` unused, so an erasure reaches it even if the customer
    never writes again."""
    _, nc, store = private
    intake, _ = await an_intake(nc, store)
    now = [0.0]
    intake.histories.clock = lambda: now[0]
    quiet, busy = phone_for(uid), f"+1555{(int(uid[:7], 16) + 1) % 10_000_000:07d}"
    for n in range(2):
        await intake.handle_message(sms(f"SM{uid}q{n}", quiet, "my invoice is wrong"))
    assert len(intake.histories) == 1
    now[0] += intake.histories.idle_s + 1
    for n in range(2):
        await intake.handle_message(sms(f"SM{uid}b{n}", busy, "my invoice is wrong"))
    assert len(intake.histories) == 1  # the busy one; the quiet one's went


async def test_a_customer_merged_in_since_the_last_read_is_read_whole(
    private: tuple[str, NATS, EventStore], uid: str
) -> None:
    """After ``CustomersMerged``, the merged customer's history belongs to the survivor's: the
    next read takes all of it, and later reads go on from where each customer was read."""
    _, _, store = private
    survivor, merged = f"cu_{uid}_a", f"cu_{uid}_b"
    now = datetime.now(UTC)

    def opened(customer: str, conv: str) -> Append:
        return Append(
            ConversationOpened(at=now, customer_id=customer, conversation_id=conv, channel="sms", contact="+1555")
        )

    await store.append(Append(CustomerCreated(at=now, customer_id=survivor, identity=f"sms:{uid}a")))
    await store.append(opened(survivor, "cv_a"))
    await store.append(Append(CustomerCreated(at=now, customer_id=merged, identity=f"sms:{uid}b")))
    await store.append(opened(merged, "cv_b1"))
    histories = Histories(store)
    first = await histories.read(survivor)
    assert set(first.open) == {"cv_a"} and first.merged == set()

    await store.append(Append(CustomersMerged(at=now, customer_id=survivor, merged_id=merged)))
    await store.append(opened(merged, "cv_b2"))
    kept = await histories.read(survivor)
    whole = fold_history([*await store.read_customer(survivor), *await store.read_customer(merged)], survivor)
    assert kept == whole and set(kept.open) == {"cv_a", "cv_b1", "cv_b2"}

    await store.append(opened(merged, "cv_b3"))
    again = await histories.read(survivor)
    assert "cv_b3" in again.open and again.seqs[merged] == (await store.read_customer(merged))[-1].seq
