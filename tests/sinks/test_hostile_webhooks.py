"""The helpdesk sinks' inbound side against a hostile client and a careless or dishonest
helpdesk agent (a security audit's reproductions): a webhook body that trickles in, a public
comment by someone other than the agent holding the conversation, a Freshdesk forward.

Over a real nats-server, beside the fake helpdesks (``tests/sinks/*_fake.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.sdk import http as connector_http
from events.model import ConversationAssigned, ConversationTransferred, DecisionReason
from services.sinks.conformance import FakeComment, FakeTicket
from services.sinks.conformance.rig import Rig, eventually
from services.sinks.freshdesk import FreshdeskSink
from services.sinks.zendesk import COMMENT_ADDED, ZendeskSink
from tests.trickle import answer_to_trickling_body

from .freshdesk_fake import AGENTS as FRESHDESK_AGENTS
from .freshdesk_fake import FakeFreshdesk, freshdesk_config
from .test_sink_failure_modes import make_rig
from .zendesk_fake import AGENTS, FakeZendesk, zendesk_config

pytestmark = pytest.mark.integration

STRANGER = "7777"  # a helpdesk staff member mapped to no Relaydesk agent


async def _ticket(rig: Rig, conversation: str) -> FakeTicket:
    async def probe() -> FakeTicket | None:
        return rig.fake.ticket_of(conversation)

    return await eventually(probe)


async def test_a_webhook_body_that_trickles_in_is_408_not_held_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle timeout closes a connection whose head trickles in, not one whose body does: a
    head with Content-Length and then silence held a request open, before any signature check."""
    monkeypatch.setattr(connector_http, "BODY_TIMEOUT", 0.5)
    async with make_rig(tmp_path, FakeZendesk(), ZendeskSink, zendesk_config) as rig:
        head = await answer_to_trickling_body(
            rig.base_url, "/zendesk/webhook", content_type="application/json", start=b'{"type":'
        )
        assert head.startswith(b"HTTP/1.1 408 "), head


def _zendesk_comment(fake: FakeZendesk, ticket: FakeTicket, text: str, author: str) -> Any:
    comment = FakeComment(id=fake.next_id(), body=text, author=author, public=True, staff=True)
    ticket.comments.append(comment)
    return fake._webhook(ticket, COMMENT_ADDED, fake._comment_event(comment))


async def _move_to(rig: Rig, customer: str, conversation: str, agent: str) -> None:
    """The conversation is transferred away from its agent, then assigned to ``agent``."""
    common: dict[str, Any] = {"at": datetime.now(UTC), "customer_id": customer, "conversation_id": conversation}
    await rig.append(ConversationTransferred(**common, from_agent="ava", to_agent=agent, actor="agent:ava"))
    await rig.append(
        ConversationAssigned(**common, agent_id=agent, channel=rig.channel, reason=DecisionReason(rule="t"))
    )


async def test_zendesk_only_the_agent_holding_the_conversation_answers_its_customer(tmp_path: Path) -> None:
    """Any Zendesk staff member's public comment went out to the customer as the holder's reply
    (an agent the conversation was transferred away from, a colleague mapped to nobody), and
    on a conversation nobody held. Now: not sent, an internal note says why, and a comment
    refused once is not sent later when its author comes to hold the conversation."""
    fake = FakeZendesk()
    async with make_rig(tmp_path, fake, ZendeskSink, zendesk_config) as rig:
        customer, conversation = await rig.open_assigned()
        ticket = await _ticket(rig, conversation)
        by_bruno = _zendesk_comment(fake, ticket, "Bruno here: we refunded you", str(AGENTS["bruno"]))
        by_stranger = _zendesk_comment(fake, ticket, "Your account is closed", STRANGER)
        for call in (by_bruno, by_stranger, by_bruno):  # the helpdesk retries a webhook
            status, body = await rig.post(call)
            assert status == 200 and body["acted"] is False, body
        notes = [c.body for c in ticket.comments if not c.public]
        assert len(notes) == 2 and all("did not send comment" in n for n in notes), notes
        assert await rig.replies(customer) == []

        await _move_to(rig, customer, conversation, "bruno")
        await rig.caught_up(customer)
        status, body = await rig.post(by_bruno)  # refused before: still not sent
        assert status == 200 and body["acted"] is False, body
        status, body = await rig.post(_zendesk_comment(fake, ticket, "Ava again", str(AGENTS["ava"])))
        assert status == 200 and body["acted"] is False, body
        status, body = await rig.post(_zendesk_comment(fake, ticket, "Bruno: done", str(AGENTS["bruno"])))
        assert status == 200 and body["acted"] is True, body
        [reply] = await rig.replies(customer)
        assert (reply.text, reply.agent_id) == ("Bruno: done", "bruno")
        assert [o.text for o in await rig.outbound()] == ["Bruno: done"]


class FreshdeskWithForwards(FakeFreshdesk):
    """Entries whose id is in ``forwards`` are forwarded emails (source 8), the rest replies."""

    def __init__(self) -> None:
        super().__init__()
        self.forwards: set[str] = set()

    def _entry(self, comment: FakeComment, *, source: int) -> dict[str, Any]:
        return super()._entry(comment, source=8 if comment.id in self.forwards else source)


async def test_freshdesk_only_the_holders_replies_go_and_never_a_forward(tmp_path: Path) -> None:
    """Every public agent entry of the ticket went to the customer: another agent's, and a
    forward of the ticket to a third party with what was written for them."""
    fake = FreshdeskWithForwards()
    async with make_rig(tmp_path, fake, FreshdeskSink, freshdesk_config) as rig:
        customer, conversation = await rig.open_assigned()
        ticket = await _ticket(rig, conversation)
        await rig.caught_up(customer)
        ava, bruno = str(FRESHDESK_AGENTS["ava"]), str(FRESHDESK_AGENTS["bruno"])
        forward = FakeComment(id=fake.next_id(), body="Vendor: customer looks like a fraud", author=ava, staff=True)
        fake.forwards.add(forward.id)
        ticket.comments.append(forward)
        ticket.comments.append(FakeComment(id=fake.next_id(), body="Someone: refunded", author=STRANGER, staff=True))
        ticket.comments.append(FakeComment(id=fake.next_id(), body="Bruno: too", author=bruno, staff=True))
        call = fake.agent_reply(ticket, "Ava: we refunded you")
        for _ in range(2):
            status, body = await rig.post(call)
            assert status == 200, body
        assert [r.text for r in await rig.replies(customer)] == ["Ava: we refunded you"]
        notes = [c.body for c in ticket.comments if not c.public]
        assert len(notes) == 2 and all("did not send comment" in n for n in notes), notes

        await _move_to(rig, customer, conversation, "bruno")
        await rig.caught_up(customer)
        status, body = await rig.post(fake.agent_reply(ticket, "Ava: one more"))  # ava no longer holds it
        assert status == 200, body
        assert [r.text for r in await rig.replies(customer)] == ["Ava: we refunded you"]
