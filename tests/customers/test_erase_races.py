"""A merge racing an erasure of the same family, a message from an address that still names
an erased customer, and raw messages arriving while an erasure runs, over a real nats-server.
Found by a merges audit: a merge (the first one, or the same one asked again, which points the
merged customer's addresses at the survivor) that moved addresses after the erasure removed
them put the mappings back, and the next message from such an address was recorded on the
erased customer, whose data key is destroyed.

The races are made deterministic by ordering the steps: the merge (or the erasure) waits at a
chosen step until the other has done what it must do first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.codec import encode
from events.model import ConversationOpened, ConversationResolved, InboundMessage, MessageReceived
from events.msg_get import stored_messages
from events.personal import CustomerKeys
from events.store import Append, EventStore
from services.bootstrap import event_store
from services.bus.embedded import EmbeddedNats
from services.customers import erase
from services.customers.erase import Eraser
from services.customers.service import CustomerError, Customers
from services.identity import IdentityDirectory
from tests.customers.helpers import Desk, customer, customers_of, running_desk
from tests.integration.system import API_TOKEN, eventually

pytestmark = pytest.mark.integration

STEP_TIMEOUT = 20.0


def eraser(nc: NATS, customers: Customers) -> Eraser:
    return Eraser(customers, CustomerKeys(nc.jetstream()))


class Gate:
    """Holds a coroutine at one step: ``reached`` once it gets there, it goes on after ``open``."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._open = asyncio.Event()
        self.used = False

    def around(self, real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def held(*args: Any, **kwargs: Any) -> Any:
            if not self.used:  # the first call only
                self.used = True
                self.reached.set()
                await asyncio.wait_for(self._open.wait(), STEP_TIMEOUT)
            return await real(*args, **kwargs)

        return held

    async def wait(self) -> None:
        await asyncio.wait_for(self.reached.wait(), STEP_TIMEOUT)

    def open(self) -> None:
        self._open.set()


def crash_at_the_second_read(monkeypatch: pytest.MonkeyPatch) -> tuple[Gate, Callable[..., Awaitable[Any]]]:
    """An erasure held just before it destroys the keys (the gate) that dies at its second read
    of ``RD_INBOUND`` (after ``CustomerErased``), as a process killed there would; returns the
    gate and the real ``erase_inbound``, to put back for the retry."""
    gate = Gate()
    monkeypatch.setattr(CustomerKeys, "destroy", gate.around(CustomerKeys.destroy))
    real = erase.erase_inbound

    async def crashing_second_read(*args: Any, after: int = 0, **kwargs: Any) -> Any:
        if after:
            raise ConnectionError("the erasure's process died here")
        return await real(*args, after=after, **kwargs)

    monkeypatch.setattr(erase, "erase_inbound", crashing_second_read)
    return gate, real


async def test_a_repeated_merge_racing_an_erasure_does_not_put_the_addresses_back(
    nc: NATS, store: EventStore, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = await customers_of(nc, store)
    ann_address, other_address = f"email:ann-{uid}@example.com", f"email:ann-other-{uid}@example.com"
    ann = await customer(customers, ann_address)
    other = await customer(customers, other_address)
    await customers.merge(ann, other, "operator")

    # The same merge asked again (a retry) has read the addresses and is about to point them at
    # Ann when the erasure of Ann's family runs, whole; then the merge goes on.
    gate = Gate()
    monkeypatch.setattr(IdentityDirectory, "link", gate.around(IdentityDirectory.link))
    retry = asyncio.create_task(customers.merge(ann, other, "operator"))
    await gate.wait()
    report = await eraser(nc, customers).erase(ann, "DSR-1", "operator")
    assert sorted(report.erased_ids) == sorted([ann, other])
    gate.open()
    with pytest.raises(CustomerError) as refused:
        await retry
    assert refused.value.status == 410

    # Nothing points at the erased family: a new message from those addresses makes a new customer.
    assert await customers.directory.lookup(other_address) is None
    assert await customers.directory.lookup(ann_address) is None
    # And the same merge asked later still refuses (it was erased), changing nothing.
    with pytest.raises(CustomerError) as later:
        await customers.merge(ann, other, "operator")
    assert later.value.status == 410
    assert await customers.directory.lookup(other_address) is None


async def test_a_merge_written_while_an_erasure_runs_is_erased_with_the_family(
    nc: NATS, store: EventStore, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = await customers_of(nc, store)
    ann = await customer(customers, f"email:ann-{uid}@example.com")
    dan_address = f"email:dan-{uid}@example.com"
    dan = await customer(customers, dan_address)

    # The merge has checked both customers (nobody was being erased yet) and waits before
    # marking Dan merged; the erasure of Ann marks her family and reads it (without Dan), and
    # waits after removing its addresses; the merge then writes its event: Dan joins the family.
    merge_gate, erase_gate = Gate(), Gate()
    monkeypatch.setattr(IdentityDirectory, "mark_merged", merge_gate.around(IdentityDirectory.mark_merged))
    monkeypatch.setattr(Eraser, "_chat", erase_gate.around(Eraser._chat))
    merging = asyncio.create_task(customers.merge(ann, dan, "operator"))
    await merge_gate.wait()
    erasing = asyncio.create_task(eraser(nc, customers).erase(ann, "DSR-2", "operator"))
    await erase_gate.wait()
    merge_gate.open()
    with pytest.raises(CustomerError) as refused:
        await merging  # its event is written; pointing Dan's addresses at an erased family is not
    assert refused.value.status == 410
    erase_gate.open()
    report = await erasing

    # The erasure started again with Dan in the family: his addresses and data went too.
    assert sorted(report.erased_ids) == sorted([ann, dan])
    assert await customers.directory.lookup(dan_address) is None
    assert (await customers.facts(ann)).erased


@pytest.fixture
async def desk(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[Desk]:
    async with running_desk(tmp_path, clean_nats) as d:
        yield d


async def test_a_message_from_an_address_still_naming_an_erased_customer_starts_a_new_customer(desk: Desk) -> None:
    await desk.write("sms", "+15550003333", "SMS from Cy: before the erasure")
    cy = await desk.customer_of("sms:+15550003333")
    await desk.timeline_texts(cy, "SMS from Cy: before the erasure")
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    url = f"{desk.system.api}/v1/customers/{cy}"
    async with desk.system.http.delete(url, json={"reason": "DSR-3"}, headers=headers) as r:
        assert r.status == 200, await r.text()

    # What a merge or a link racing the erasure left behind: the address names Cy again.
    directory = IdentityDirectory(await desk.nc.jetstream().key_value(subjects.IDENTITY_BUCKET))
    await directory.link("phone:+15550003333", cy)

    await desk.write("sms", "+15550003333", "SMS from the number's next owner")

    async def new_owner() -> str | None:
        found = await directory.lookup("phone:+15550003333")
        return found if found not in (None, cy) else None

    newcomer = await eventually(new_owner)
    await desk.timeline_texts(newcomer, "SMS from the number's next owner")
    status, body = await desk.system.get(f"/v1/customers/{cy}")
    assert status == 200 and body["erased"] is True and body["identities"] == [], body


async def test_a_link_racing_an_erasure_does_not_give_the_erased_customer_an_address(
    nc: NATS, store: EventStore, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = await customers_of(nc, store)
    ann = await customer(customers, f"email:ann-{uid}@example.com")
    new_address = f"email:ann-new-{uid}@example.com"

    # The link has checked Ann (not erased) and is about to claim the address when her erasure runs.
    gate = Gate()
    monkeypatch.setattr(IdentityDirectory, "claim", gate.around(IdentityDirectory.claim))
    linking = asyncio.create_task(customers.link(ann, new_address, "operator"))
    await gate.wait()
    await eraser(nc, customers).erase(ann, "DSR-4", "operator")
    gate.open()
    with pytest.raises(CustomerError) as refused:
        await linking
    assert refused.value.status == 410
    assert await customers.directory.lookup(new_address) is None


async def test_a_conversation_opened_while_an_erasure_runs_is_resolved_with_the_family(
    nc: NATS, store: EventStore, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An intake that resolved the sender before the erasure removed the address, and recorded
    the message after the erasure resolved the family's open conversations (with the key it read
    before the erasure destroyed it): the conversation stayed open for good, offered to agents
    with its words erased. Now the erasure resolves what was opened meanwhile, after its record."""
    customers = await customers_of(nc, store)
    ann = await customer(customers, f"email:ann-late-{uid}@example.com")
    gate = Gate()
    monkeypatch.setattr(CustomerKeys, "destroy", gate.around(CustomerKeys.destroy))
    erasing = asyncio.create_task(eraser(nc, customers).erase(ann, "DSR-5", "operator"))
    await gate.wait()  # the open conversations are resolved, the keys about to go
    late = f"cv_late_{uid}"
    opened = ConversationOpened(
        at=datetime.now(UTC), customer_id=ann, conversation_id=late, channel="email", contact="ann@example.com"
    )
    await store.append(Append(opened, expected=0))
    gate.open()
    report = await erasing

    on_late = [s.event for s in await store.read(subjects.conversation(ann, late))]
    assert [type(e) for e in on_late] == [ConversationOpened, ConversationResolved]
    closed = on_late[-1]
    assert isinstance(closed, ConversationResolved) and closed.erased
    assert report.conversations_resolved == 1


async def publish_raw(nc: NATS, sender: str, provider_id: str) -> None:
    """A provider message as the email connector writes it to ``RD_INBOUND``."""
    message = InboundMessage(
        at=datetime.now(UTC),
        channel="email",
        provider="test",
        provider_message_id=provider_id,
        sender=sender,
        recipient="support@localhost",
        text=f"words of {sender}",
    )
    await nc.jetstream().publish(
        subjects.inbound("email"), encode(message), headers={"Nats-Msg-Id": f"email:{provider_id}"}
    )


async def inbound_naming(nc: NATS, *needles: str) -> int:
    """How many messages of ``RD_INBOUND`` hold one of ``needles``."""
    wanted = [n.encode() for n in needles]
    held = 0
    async for _, data in stored_messages(nc.jetstream(), subjects.INBOUND_STREAM, subjects.INBOUND_ALL):
        held += any(n in data for n in wanted)
    return held


async def record_late_conversation(store: EventStore, ann: str, conversation_id: str, provider_id: str) -> None:
    """What an intake that resolved the sender before the erasure removed the address records
    (with the key it read before the erasure destroyed it): a conversation and its first message."""
    now = datetime.now(UTC)
    opened = ConversationOpened(
        at=now, customer_id=ann, conversation_id=conversation_id, channel="email", contact="sealed"
    )
    seq = await store.append(Append(opened, expected=0))
    received = MessageReceived(
        at=now,
        customer_id=ann,
        conversation_id=conversation_id,
        channel="email",
        message_id=f"m_{provider_id}",
        provider_message_id=provider_id,
        text="sealed",
    )
    await store.append(Append(received, expected=seq))


async def test_raw_messages_that_arrive_while_an_erasure_runs_are_erased_too(
    nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RD_INBOUND was read once, before the keys went: the first message of a conversation
    opened meanwhile (resolved after CustomerErased), and any other message from the customer's
    address written after that read, stayed there in clear until retention."""
    store = event_store(nc)  # seals personal data, as the services do
    customers = await customers_of(nc, store)
    ann_address, bob_address = f"ann-arrives-{uid}@example.com", f"bob-arrives-{uid}@example.com"
    ann = await customer(customers, f"email:{ann_address}")
    await publish_raw(nc, ann_address, f"before-{uid}")
    gate = Gate()
    monkeypatch.setattr(CustomerKeys, "destroy", gate.around(CustomerKeys.destroy))
    erasing = asyncio.create_task(eraser(nc, customers).erase(ann, "DSR-6", "operator"))
    await gate.wait()  # RD_INBOUND read, the open conversations resolved, the keys about to go

    await publish_raw(nc, ann_address, f"late-{uid}")  # intake took it for Ann before her address went
    await record_late_conversation(store, ann, f"cv_arrives_{uid}", f"late-{uid}")
    await publish_raw(nc, ann_address, f"arrived-{uid}")  # not recorded anywhere yet
    await publish_raw(nc, bob_address, f"bob-{uid}")  # someone else's: stays
    gate.open()
    report = await erasing

    assert await inbound_naming(nc, ann_address, f"late-{uid}", f"arrived-{uid}") == 0
    assert await inbound_naming(nc, bob_address) == 1
    assert report.inbound_messages == 3  # the one before, and the two that came meanwhile
    assert report.conversations_resolved == 1


async def test_a_retry_erases_the_raw_messages_of_a_late_conversation_a_crash_left(
    nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure stops after CustomerErased, before it reads RD_INBOUND again: run again (a
    new process, the keys gone, so the address no longer reads), it finds the late
    conversation's raw message by the provider id on the log."""
    customers = await customers_of(nc, event_store(nc))
    ann_address = f"ann-retry-{uid}@example.com"
    ann = await customer(customers, f"email:{ann_address}")
    gate, real = crash_at_the_second_read(monkeypatch)
    erasing = asyncio.create_task(eraser(nc, customers).erase(ann, "DSR-7", "operator"))
    await gate.wait()
    await publish_raw(nc, ann_address, f"late-{uid}")
    await record_late_conversation(customers.store, ann, f"cv_retry_{uid}", f"late-{uid}")
    gate.open()
    with pytest.raises(ConnectionError):
        await erasing
    assert (await customers.facts(ann)).erased
    assert await inbound_naming(nc, f"late-{uid}") == 1

    monkeypatch.setattr(erase, "erase_inbound", real)
    again = await eraser(nc, await customers_of(nc, event_store(nc))).erase(ann, "DSR-7", "operator")
    assert again.already_erased
    assert await inbound_naming(nc, ann_address, f"late-{uid}") == 0
    assert again.inbound_messages == 1
