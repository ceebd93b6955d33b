"""An erased customer's helpdesk copies go with them: the tickets the sink created (also one
whose link lapsed, found by the requester the sink created) and that helpdesk user, permanently
as each helpdesk documents it; another customer's stay; a redelivered CustomerErased (a replay
of the log) deletes nothing twice and creates no ticket again; ``on_erasure = "keep"`` leaves
everything; a delete the API user has no right to parks the event, naming the right."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from events.model import (
    ConversationAssigned,
    ConversationOpened,
    CustomerErased,
    DecisionReason,
    MessageReceived,
)
from services.sinks.conformance.fake import FakeComment, FakeHelpdesk, FakeTicket
from services.sinks.conformance.rig import Rig, eventually
from services.sinks.freshdesk import FreshdeskSink
from services.sinks.sdk import Sink, SinkConfigError
from services.sinks.zendesk import ZendeskSink

from .freshdesk_fake import FakeFreshdesk, freshdesk_config
from .test_sink_failure_modes import make_rig
from .zendesk_fake import FakeZendesk, zendesk_config

pytestmark = pytest.mark.integration

WHICH = ["zendesk", "freshdesk"]


def parts(which: str) -> tuple[FakeHelpdesk, type[Sink], Any]:
    if which == "zendesk":
        return FakeZendesk(), ZendeskSink, zendesk_config
    return FakeFreshdesk(), FreshdeskSink, freshdesk_config


def user_of(fake: FakeHelpdesk, customer: str) -> str | None:
    """The helpdesk user (Zendesk) or contact (Freshdesk) made for the customer, if still there."""
    if isinstance(fake, FakeZendesk):
        user = fake.users.get(customer)
        return str(user["id"]) if user is not None else None
    assert isinstance(fake, FakeFreshdesk)
    found = fake.contacts.get(customer)
    return str(found) if found is not None else None


def anywhere(fake: FakeHelpdesk, requester: str) -> list[FakeTicket]:
    """The requester's tickets, listed, soft-deleted or in the trash: only a permanent delete
    takes them out of all three."""
    kept = fake.deleted_tickets if isinstance(fake, FakeZendesk) else getattr(fake, "trash", {})
    return [t for t in [*fake.tickets.values(), *kept.values()] if t.requester == requester]


def deletes(fake: FakeHelpdesk) -> int:
    return sum(1 for seen in fake.seen if seen.method == "DELETE")


async def conversation_of(rig: Rig, customer: str, text: str) -> str:
    """Another conversation of ``customer``, assigned to ava (as the router would write it)."""
    conversation = "cv" + uuid.uuid4().hex[:10]
    common: dict[str, Any] = {"at": datetime.now(UTC), "customer_id": customer, "conversation_id": conversation}
    await rig.append(ConversationOpened(**common, channel=rig.channel, contact=rig.contact))
    message_id = "m" + uuid.uuid4().hex[:12]
    await rig.append(
        MessageReceived(
            **common, channel=rig.channel, message_id=message_id, provider_message_id="p" + message_id, text=text
        )
    )
    await rig.append(
        ConversationAssigned(**common, agent_id="ava", channel=rig.channel, reason=DecisionReason(rule="test"))
    )
    return conversation


async def linked(rig: Rig, conversation: str) -> str:
    async def probe() -> str | None:
        link = await rig.sink.state.link(conversation)
        return link.ticket_id if link is not None and link.ticket_id in rig.fake.tickets else None

    return await eventually(probe, timeout=20)


async def erase(rig: Rig, customer: str) -> None:
    await rig.append(CustomerErased(at=datetime.now(UTC), customer_id=customer, reason="DSR-42", actor="operator"))
    await rig.caught_up(customer, timeout=20)


def erasures(sink: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("relaydesk_sink_erasures_total", {"sink": sink, "outcome": outcome})
    return value or 0.0


@pytest.mark.parametrize("which", WHICH)
async def test_an_erased_customers_tickets_and_user_leave_the_helpdesk(tmp_path: Path, which: str) -> None:
    fake, sink_cls, config = parts(which)
    async with make_rig(tmp_path, fake, sink_cls, config) as rig:
        customer, first = await rig.open_assigned("My invoice is wrong")
        second = await conversation_of(rig, customer, "And my address changed")
        other, theirs = await rig.open_assigned("Where is my parcel?")
        lapsed_ticket = await linked(rig, first)
        await linked(rig, second)
        other_ticket = await linked(rig, theirs)
        # The first conversation's link lapsed (30 days after it was resolved): only the
        # requester the sink created still leads to its ticket.
        await rig.sink.state.delete(f"ticket.{lapsed_ticket}")
        await rig.sink.state.delete(f"conv.{first}")
        requester = user_of(fake, customer)
        assert requester is not None and len(anywhere(fake, requester)) == 2

        await erase(rig, customer)

        assert anywhere(fake, requester) == [], "the erased customer's tickets are still in the helpdesk"
        assert user_of(fake, customer) is None, "the erased customer's helpdesk user is still there"
        assert other_ticket in fake.tickets and user_of(fake, other) is not None, "another customer's went too"
        assert await rig.sink.state.get(f"user.{customer}") is None

        # Redelivered (the position lost, the whole log read again): nothing deleted twice, no
        # ticket created again for the erased customer, the other customer's ticket not doubled.
        done, calls = erasures(which, "already"), deletes(fake)
        await rig.restart(replay=True)
        await rig.caught_up(customer, timeout=20)
        await rig.caught_up(other, timeout=20)
        assert deletes(fake) == calls
        assert erasures(which, "already") == done + 1
        assert not any(t.requester == requester for t in fake.tickets.values())
        assert [t.id for t in fake.tickets.values()] == [other_ticket]


@pytest.mark.parametrize("which", WHICH)
async def test_keep_leaves_the_helpdesk_copies(tmp_path: Path, which: str) -> None:
    fake, sink_cls, config = parts(which)
    async with make_rig(tmp_path, fake, sink_cls, config, on_erasure="keep") as rig:
        customer, conversation = await rig.open_assigned("My invoice is wrong")
        ticket = await linked(rig, conversation)
        await erase(rig, customer)
        assert ticket in fake.tickets and user_of(fake, customer) is not None
        assert deletes(fake) == 0


@pytest.mark.parametrize("which", WHICH)
async def test_a_helpdesk_user_with_tickets_of_its_own_is_kept(tmp_path: Path, which: str) -> None:
    fake, sink_cls, config = parts(which)
    async with make_rig(tmp_path, fake, sink_cls, config) as rig:
        customer, conversation = await rig.open_assigned("My invoice is wrong")
        ours = await linked(rig, conversation)
        requester = user_of(fake, customer)
        assert requester is not None
        # The customer also wrote to the helpdesk's own address: a ticket Relaydesk did not make.
        closed = "closed" if isinstance(fake, FakeZendesk) else "5"
        own = FakeTicket(id=fake.next_id(), conversation_id="", requester=requester, status=closed, tags=["email"])
        own.comments.append(FakeComment(id=fake.next_id(), body="hello", author=requester))
        fake.tickets[own.id] = own
        if isinstance(fake, FakeFreshdesk):
            fake.times[own.id] = (datetime.now(UTC).timestamp(), datetime.now(UTC).timestamp())
        await erase(rig, customer)
        assert ours not in fake.tickets and own.id in fake.tickets
        assert user_of(fake, customer) is not None


@pytest.mark.parametrize("which", WHICH)
async def test_a_delete_the_api_user_may_not_do_is_parked_naming_the_right(tmp_path: Path, which: str) -> None:
    fake, sink_cls, config = parts(which)
    assert isinstance(fake, FakeZendesk | FakeFreshdesk)
    async with make_rig(tmp_path, fake, sink_cls, config) as rig:
        customer, conversation = await rig.open_assigned("My invoice is wrong")
        ticket = await linked(rig, conversation)
        fake.forbid_deletes = True
        await erase(rig, customer)
        parked = await rig.sink.state.parked()
        assert [p.type for p in parked] == ["CustomerErased"]
        assert "(403)" in parked[0].error and "delete" in parked[0].error.lower() and not parked[0].auth
        assert ticket in fake.tickets and not rig.runtime.auth_failed

        fake.forbid_deletes = False
        assert await rig.runtime.retry_parked() == (1, 0)
        assert ticket not in fake.tickets and user_of(fake, customer) is None


async def test_a_contact_refused_after_its_tickets_went_is_found_again(tmp_path: Path) -> None:
    """A sink from before kept no ``user.<customer>`` for Freshdesk; once the tickets are in
    the trash nothing lists the contact, so the one the tickets named is kept for the retry."""
    fake = FakeFreshdesk()
    async with make_rig(tmp_path, fake, FreshdeskSink, freshdesk_config) as rig:
        customer, conversation = await rig.open_assigned("My invoice is wrong")
        await linked(rig, conversation)
        await rig.sink.state.delete(f"user.{customer}")
        await rig.sink.state.delete(f"conv.{conversation}")
        fake.forbid_contact_deletes = True
        await erase(rig, customer)
        assert [p.type for p in await rig.sink.state.parked()] == ["CustomerErased"]
        assert not fake.tickets and user_of(fake, customer) is not None

        fake.forbid_contact_deletes = False
        assert await rig.runtime.retry_parked() == (1, 0)
        assert user_of(fake, customer) is None and not fake.trash


def test_an_unknown_on_erasure_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(SinkConfigError, match=r"\[sinks.zendesk\].*on_erasure"):
        ZendeskSink.from_config({**zendesk_config("http://zendesk.invalid"), "on_erasure": "purge"})
