"""Taking an address away from a customer (``DELETE /v1/customers/{id}/identities/{identity}``,
``relaydesk customers unlink``): linked by mistake, or a number that passed to someone else.
Before, an address once a customer's stayed theirs for good: every later message from it landed
on their timeline. Over a real nats-server with intake, router, projector and API in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from connectors.chat.history import ChatHistory
from connectors.chat.tokens import provider_message_id as chat_message_id
from events import subjects
from events.model import CustomerCreated, IdentityLinked, IdentityUnlinked, MessageReceived, ReplyRequested
from events.personal import CustomerKeys
from events.store import Append, EventStore
from events.stored import StoredEvent
from events.streams import ensure_streams
from services import logs
from services.bus.embedded import EmbeddedNats
from services.cli import main
from services.customers.erase import Eraser, ErasureTargets
from services.customers.facts import fold_facts
from services.customers.service import CustomerError
from services.customers.unlink import unlink
from services.timelines.changes import CustomerChange
from services.timelines.rows import CustomerSummary
from services.timelines.summaries import merge_customer
from tests.customers.helpers import Desk, customer, customers_of, running_desk
from tests.integration.system import eventually

AT = datetime(2026, 12, 7, tzinfo=UTC)
NUMBER = "phone:+15550002222"


@pytest.fixture
async def desk(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[Desk]:
    async with running_desk(tmp_path, clean_nats) as d:
        yield d


async def _found(desk: Desk, identity: str) -> str | None:
    status, body = await desk.system.get("/v1/customers", identity=identity)
    return body["customers"][0]["customer_id"] if status == 200 else None


@pytest.mark.integration
async def test_a_number_unlinked_from_a_customer_starts_a_new_customer_with_its_next_message(desk: Desk) -> None:
    await desk.write("sms", "+15550002222", "Ann: my order is late")
    ann = await desk.customer_of(NUMBER)
    await desk.timeline_texts(ann, "Ann: my order is late")

    status, body = await desk.delete(
        f"/v1/customers/{ann}/identities/{NUMBER}", {"reason": "number given up, passed to someone else"}
    )
    assert status == 200, body
    assert body == {
        "customer_id": ann,
        "identity": NUMBER,
        "unlinked": True,
        "already_unlinked": False,
        "conversations_resolved": 1,
        "replies_withdrawn": 0,
    }
    # On the log, on Ann's own subject, with who and why.
    on_ann = [s.event for s in await desk.store.read(subjects.customer_scope(ann))]
    unlinked = [e for e in on_ann if isinstance(e, IdentityUnlinked)]
    assert [(e.identity, e.actor, e.reason) for e in unlinked] == [
        (NUMBER, "operator", "number given up, passed to someone else")
    ]
    status, body = await desk.system.get(f"/v1/customers/{ann}")
    assert NUMBER not in body["identities"], body
    assert await _found(desk, NUMBER) is None

    # The number's next message is a new customer's; Ann keeps what she wrote from it.
    await desk.write("sms", "+15550002222", "Bob: hello, new number")
    bob = await desk.customer_of(NUMBER)
    assert bob != ann
    await desk.timeline_texts(bob, "Bob: hello, new number")
    entries = await desk.timeline_texts(ann, "Ann: my order is late")
    assert "Bob: hello, new number" not in {e.get("text") for e in entries}
    shown = [e["detail"] for e in entries if e["kind"] == "identity_unlinked"]
    assert shown == [{"identity": NUMBER, "actor": "operator", "reason": "number given up, passed to someone else"}]

    async def summary_without_it() -> bool:  # the timelines' customer row (search reads it)
        status, body = await desk.system.get("/v1/customers", q="+15550002222")
        return status == 200 and [c["customer_id"] for c in body["customers"]] == [bob]

    await eventually(summary_without_it)

    # Again (a retry): nothing new written, and Bob keeps the number.
    status, body = await desk.delete(f"/v1/customers/{ann}/identities/{NUMBER}")
    assert (status, body["unlinked"], body["already_unlinked"]) == (200, False, True), body
    assert (
        len([s for s in await desk.store.read(subjects.customer_scope(ann)) if isinstance(s.event, IdentityUnlinked)])
        == 1
    )
    assert await _found(desk, NUMBER) == bob

    # Erasing Ann later leaves Bob's number alone (the erasure takes the addresses Ann has now).
    status, body = await desk.delete(f"/v1/customers/{ann}", {"reason": "asked to be forgotten"})
    assert status == 200, body
    assert await _found(desk, NUMBER) == bob


@pytest.mark.integration
async def test_unlinking_an_address_of_a_customer_merged_in_and_the_refusals(desk: Desk) -> None:
    await desk.write("sms", "+15550003333", "SMS from Cy")
    await desk.write("email", "cy@example.com", "Email from Cy")
    cy = await desk.customer_of("sms:+15550003333")
    other = await desk.customer_of("email:cy@example.com")
    status, body = await desk.system.post(f"/v1/customers/{cy}/merge", {"other": other})
    assert status == 200, body

    # The address came with the merged customer: taken away on its subject, through the survivor.
    status, body = await desk.delete(f"/v1/customers/{cy}/identities/email:cy@example.com")
    assert (status, body["unlinked"]) == (200, True), body
    on_other = [s.event for s in await desk.store.read(subjects.customer_scope(other))]
    assert [e.identity for e in on_other if isinstance(e, IdentityUnlinked)] == ["email:cy@example.com"]
    status, body = await desk.system.get(f"/v1/customers/{cy}")
    assert body["identities"] == ["phone:+15550003333"], body
    await desk.write("email", "cy@example.com", "Email from whoever has that mailbox now")
    newcomer = await desk.customer_of("email:cy@example.com")
    assert newcomer not in (cy, other)

    # Refusals: never had it, a merged-away customer (names the survivor), a bad address, nobody.
    status, body = await desk.delete(f"/v1/customers/{cy}/identities/email:never@example.com")
    assert status == 404, body
    status, body = await desk.delete(f"/v1/customers/{other}/identities/phone:+15550003333")
    assert (status, body.get("survivor")) == (409, cy), body
    status, body = await desk.delete(f"/v1/customers/{cy}/identities/sms:12")
    assert status == 400, body
    status, body = await desk.delete(f"/v1/customers/cu_nobody/identities/{NUMBER}")
    assert status == 404, body
    # Linked again afterwards: Cy's once more.
    status, body = await desk.system.post(
        f"/v1/customers/{cy}/identities", {"identity": "email:cy@example.com", "merge": True}
    )
    assert status == 200, body
    status, body = await desk.system.get(f"/v1/customers/{cy}")
    assert "email:cy@example.com" in body["identities"], body


def _stored(seq: int, event: Any) -> StoredEvent:
    return StoredEvent(seq=seq, subject=subjects.customer_scope(event.customer_id), event=event)


def test_the_log_folds_an_unlinked_address_out_and_a_later_link_back_in() -> None:
    created = CustomerCreated(at=AT, customer_id="cu_a", identity=NUMBER)
    linked = IdentityLinked(at=AT, customer_id="cu_a", identity="email:a@example.com")
    gone = IdentityUnlinked(at=AT, customer_id="cu_a", identity=NUMBER, reason="recycled")
    facts = fold_facts("cu_a", [_stored(1, created), _stored(2, linked), _stored(3, gone)])
    assert (facts.identities, facts.unlinked) == (["email:a@example.com"], [NUMBER])
    back = IdentityLinked(at=AT, customer_id="cu_a", identity=NUMBER)
    facts = fold_facts("cu_a", [_stored(1, created), _stored(3, gone), _stored(4, back)])
    assert (facts.identities, facts.unlinked) == ([NUMBER], [])


def test_the_customer_summary_loses_an_unlinked_address() -> None:
    summary = CustomerSummary(customer_id="cu_a", identities=["email:a@example.com", NUMBER], last_seq=2)
    after = merge_customer(summary, CustomerChange(customer_id="cu_a", seq=3, at=AT, unlinked=NUMBER))
    assert after.identities == ["email:a@example.com"]
    assert after.last_seq == 3


@pytest.mark.integration
def test_the_cli_unlinks_and_says_so_again(
    nats_url: str, uid: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    address = f"chat:cli-unlink-{uid}"

    async def one() -> str:
        nc = await nats.connect(nats_url)
        try:
            await ensure_streams(nc.jetstream())
            return await customer(await customers_of(nc, EventStore(nc, nc.jetstream())), address)
        finally:
            await nc.drain()

    customer_id = asyncio.run(one())
    unlink = ["customers", "unlink", customer_id, address, "--reason", "typo", "--nats-url", nats_url]
    assert main([*unlink, "--log-level", "warning"]) == 0
    assert (
        f"{address}: unlinked from {customer_id} (0 open conversations on it resolved, 0 unsent replies taken back)"
        in capsys.readouterr().out
    )
    assert main([*unlink, "--log-level", "warning"]) == 0
    assert f"{address}: was already unlinked from {customer_id}" in capsys.readouterr().out
    never = ["customers", "unlink", customer_id, "chat:someone-else", "--nats-url", nats_url]
    assert main([*never, "--log-level", "warning"]) == 1
    assert "refused (404)" in capsys.readouterr().err


@pytest.mark.integration
async def test_an_address_only_the_index_gives_the_customer_is_unlinked_too(
    nc: NATS, store: EventStore, uid: str
) -> None:
    """rd_identity may point an address at a customer whose log never named it (a pointer a
    merge moved, a mapping from before): messages from it land on the customer, so it can be
    taken away as well, and the fact is on the customer's log."""
    customers = await customers_of(nc, store)
    owner = await customer(customers, f"chat:owner-{uid}")
    ghost = f"chat:ghost-{uid}"
    await customers.directory.link(ghost, owner)
    answer = await unlink(customers, owner, ghost, "operator", reason="not theirs")
    assert (answer["unlinked"], answer["already_unlinked"]) == (True, False)
    assert await customers.directory.lookup(ghost) is None
    assert (await customers.facts(owner)).unlinked == [ghost]
    assert (await unlink(customers, owner, ghost, "operator"))["already_unlinked"] is True
    with pytest.raises(CustomerError) as never:
        await unlink(customers, owner, f"chat:nobody-{uid}", "operator")
    assert never.value.status == 404


@pytest.mark.integration
async def test_an_erasure_takes_the_customers_chat_frames_from_an_address_taken_away_and_leaves_the_next_owners(
    nc: NATS, store: EventStore, uid: str
) -> None:
    """Found by a docs walkthrough: a web chat address (a visitor id) keeps its history by
    address; once unlinked, erasing the customer who had it erased none of that history, and
    their words stayed readable to whoever holds the visitor id. Now the family's frames go (its
    messages, replies and conversations' notices), and the next owner's stay."""
    js = nc.jetstream()
    history = ChatHistory(stream=f"RD_CHAT_T{uid}", prefix=f"t{uid}.chat", js=js)
    await history.ensure()
    try:
        customers = await customers_of(nc, store)
        visitor = f"v-{uid}"
        ann = await customer(customers, f"chat:{visitor}")
        conversation = f"cv_{uid}"
        await history.append(visitor, "message", "m-ann", "my order is late")
        said = MessageReceived(
            at=AT,
            customer_id=ann,
            conversation_id=conversation,
            channel="chat",
            message_id=f"msg_{uid}",
            provider_message_id=chat_message_id(visitor, "m-ann"),
            text="my order is late",
        )
        await store.append(Append(said))
        await history.append(visitor, "reply", f"rp_{uid}", "we are on it")
        answered = ReplyRequested(
            at=AT, customer_id=ann, conversation_id=conversation, channel="chat", reply_id=f"rp_{uid}", text="on it"
        )
        await store.append(Append(answered))
        # Not told where this history is (the default RD_CHAT): the frames stay, as an unlink
        # before 2026-12-07 left them (test_unlink_chat_history: an unlink takes them now).
        await unlink(customers, ann, f"chat:{visitor}", "operator", reason="a shared computer")
        bob = await customer(customers, f"chat:{visitor}")  # the visitor id's next owner
        assert bob != ann
        await history.append(visitor, "message", "m-bob", "hello")

        targets = ErasureTargets(chat_stream=history.stream, chat_subject=history.prefix)
        report = await Eraser(customers, CustomerKeys(js), targets).erase(ann, "DSR-6", "operator")
        assert report.chat_frames == 2
        assert [frame.key for frame in await history.read(visitor, 0)] == ["m-bob"]
    finally:
        await js.delete_stream(history.stream)
