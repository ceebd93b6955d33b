"""Unlinking an address resolves the customer's conversations still open on it. Before, a
conversation open on a number that passed to someone else stayed open and assigned, and the
agent's next reply went out to the number, i.e. to its new holder. Now the unlink writes
``ConversationResolved`` (actor: the unlinker) for each, the router frees the agent, a reply is
refused (409) like on any resolved conversation, and a conversation on another address of the
customer stays open. Asking again resolves nothing more. Over a real nats-server: the whole
system in-process for the API's side, the customers' commands alone for the matching."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from events import subjects
from events.model import (
    ConversationOpened,
    ConversationResolved,
    CustomerCreated,
    IdentityLinked,
    MessageReceived,
    Requirements,
    RoutingRequested,
)
from events.store import Append, EventStore
from services.bus.embedded import EmbeddedNats
from services.customers import unlink as unlink_module
from services.customers.unlink import unlink
from tests.agents.helpers import API_TOKEN, AgentSystem, agent_system, agents_config, eventually, ok
from tests.customers.helpers import customer, customers_of

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 7, tzinfo=UTC)
NUMBER = "+15550107777"
MAIL = "ann@example.com"


@pytest.fixture
async def s(tmp_path: Path, clean_nats: EmbeddedNats) -> AsyncIterator[AgentSystem]:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as system:
        yield system


async def _open(
    store: EventStore, customer_id: str, cid: str, channel: str, contact: str, *, routed: bool = True
) -> None:
    """A conversation as intake records a first message from ``contact``."""
    now = datetime.now(UTC)
    opened = ConversationOpened(at=now, customer_id=customer_id, conversation_id=cid, channel=channel, contact=contact)
    seq = await store.append(Append(opened, expected=0))
    said = MessageReceived(
        at=now,
        customer_id=customer_id,
        conversation_id=cid,
        channel=channel,
        message_id=f"m-{cid}",
        provider_message_id=f"p-{cid}",
        text="where is my order?",
        contact=contact,
    )
    seq = await store.append(Append(said, expected=seq))
    if routed:
        requirements = Requirements(skills={"billing": 1}, language="en")
        asked = RoutingRequested(
            at=now,
            customer_id=customer_id,
            conversation_id=cid,
            channel=channel,
            requirements=requirements,
        )
        await store.append(Append(asked, expected=seq))


def _resolutions(events: Sequence[object], cid: str) -> list[ConversationResolved]:
    return [e for e in events if isinstance(e, ConversationResolved) and e.conversation_id == cid]


async def test_unlinking_a_number_resolves_the_conversation_open_on_it_and_refuses_replies(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    ann = "cu_unlinkconv"
    now = datetime.now(UTC)
    await s.store.append(Append(CustomerCreated(at=now, customer_id=ann, identity=f"phone:{NUMBER}")))
    await s.store.append(Append(IdentityLinked(at=now, customer_id=ann, identity=f"email:{MAIL}")))
    on_number, on_mail = "cv_onnumber", "cv_onmail"
    await _open(s.store, ann, on_number, "sms", NUMBER)
    await s.offered_to(on_number, "ava")
    await ok(s, "POST", f"/v1/conversations/{on_number}/accept", ava)
    await eventually(lambda: s.conversation(on_number, "assigned"))
    await _open(s.store, ann, on_mail, "email", MAIL, routed=False)
    await eventually(lambda: s.conversation(on_mail))

    status, body = await s.call(
        "DELETE", f"/v1/customers/{ann}/identities/sms:{NUMBER}", API_TOKEN, {"reason": "number passed on"}
    )
    assert status == 200, body
    assert (body["unlinked"], body["conversations_resolved"]) == (True, 1), body

    # On the log, by the unlinker; the router lets go of it and frees Ava.
    events = [e.event for e in await s.log(ann)]
    assert [(e.actor, e.agent_id, e.erased) for e in _resolutions(events, on_number)] == [("operator", None, False)]
    assert _resolutions(events, on_mail) == []

    async def let_go() -> bool:
        status, mine = await s.call("GET", "/v1/conversations", ava)
        return status == 200 and on_number not in {c["conversation_id"] for c in mine["conversations"]}

    await eventually(let_go)
    # Ava's reply goes nowhere: refused as on any resolved conversation, nothing on the log.
    status, body = await s.call("POST", f"/v1/conversations/{on_number}/reply", ava, {"text": "Your refund is sent"})
    assert status == 409, body
    status, body = await s.call("POST", f"/v1/conversations/{on_number}/reply", API_TOKEN, {"text": "Hello?"})
    assert status == 409, body
    # The conversation on her mail stays open.
    assert await s.conversation(on_mail) is not None

    # Again (a retry): nothing resolved twice.
    status, body = await s.call("DELETE", f"/v1/customers/{ann}/identities/sms:{NUMBER}", API_TOKEN)
    assert status == 200, body
    assert (body["already_unlinked"], body["conversations_resolved"]) == (True, 0), body
    events = [e.event for e in await s.log(ann)]
    assert len(_resolutions(events, on_number)) == 1
    assert _resolutions(events, on_mail) == []
    assert await s.conversation(on_mail) is not None


async def test_which_conversations_are_on_the_address(nc: NATS, store: EventStore, uid: str) -> None:
    """On the address: opened on it (in any form of it, on any channel of its kind), or its
    replies go to it now (the customer wrote from it last). Not: one resolved before, one on
    another address. A customer merged in counts (the family)."""
    customers = await customers_of(nc, store)
    number = f"+1555{int(uid, 16) % 10_000_000:07d}"
    ann = await customer(customers, f"phone:{number}")
    other = await customer(customers, f"email:other-{uid}@example.com")
    await customers.link(ann, f"email:ann-{uid}@example.com", "operator")
    await customers.merge(ann, other, "operator")
    spaced = f"{number[:2]} ({number[2:5]}) {number[5:8]}-{number[8:]}"
    await _open(store, ann, f"cv_sms_{uid}", "sms", spaced, routed=False)  # how the provider wrote it
    await _open(store, ann, f"cv_wa_{uid}", "whatsapp", f"whatsapp:{number}", routed=False)
    await _open(store, ann, f"cv_mail_{uid}", "email", f"Ann-{uid}@Example.com", routed=False)
    await _open(store, other, f"cv_merged_{uid}", "voice", number, routed=False)
    # Opened from her mail, then she wrote from the number: the replies go to the number.
    moved = f"cv_moved_{uid}"
    await _open(store, ann, moved, "email", f"ann-{uid}@example.com", routed=False)
    then = MessageReceived(
        at=AT,
        customer_id=ann,
        conversation_id=moved,
        channel="sms",
        message_id=f"m2-{moved}",
        provider_message_id=f"p2-{moved}",
        text="it's me on my phone",
        contact=number,
    )
    await store.append(Append(then))
    done = f"cv_done_{uid}"
    await _open(store, ann, done, "sms", number, routed=False)
    await store.append(Append(ConversationResolved(at=AT, customer_id=ann, conversation_id=done, actor="agent:ava")))

    result = await unlink(customers, ann, f"sms:{number}", "operator:dana", reason="number passed on")
    assert result["conversations_resolved"] == 4, result
    resolved = {
        (s.event.conversation_id, s.event.actor)
        for member in (ann, other)
        for s in await store.read_customer(member)
        if isinstance(s.event, ConversationResolved) and s.event.actor == "operator:dana"
    }
    assert resolved == {
        (f"cv_sms_{uid}", "operator:dana"),
        (f"cv_wa_{uid}", "operator:dana"),
        (f"cv_merged_{uid}", "operator:dana"),
        (moved, "operator:dana"),
    }
    # The merged customer's conversation is resolved on its own subject.
    on_other = [s for s in await store.read(subjects.conversation(other, f"cv_merged_{uid}"))]
    assert isinstance(on_other[-1].event, ConversationResolved)
    assert (await unlink(customers, ann, f"sms:{number}", "operator:dana"))["conversations_resolved"] == 0


async def test_a_retry_after_a_crash_before_the_resolutions_resolves(
    nc: NATS, store: EventStore, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = await customers_of(nc, store)
    address = f"chat:visitor-{uid}"
    ann = await customer(customers, address)
    cid = f"cv_chat_{uid}"
    await _open(store, ann, cid, "chat", f"visitor-{uid}", routed=False)

    async def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(unlink_module, "resolve_on_address", crash)
    with pytest.raises(RuntimeError):
        await unlink(customers, ann, address, "operator")
    monkeypatch.undo()
    answer = await unlink(customers, ann, address, "operator")
    assert (answer["already_unlinked"], answer["conversations_resolved"]) == (True, 1), answer
    events = [s.event for s in await store.read_customer(ann)]
    assert [e.actor for e in _resolutions(events, cid)] == ["operator"]
