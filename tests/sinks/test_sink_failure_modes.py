"""Helpdesk sinks against provider failure modes (from an audit's reproductions): a comment
write that times out although the helpdesk stored it, a ticket with more conversation entries
than Freshdesk's first page, and an expired API token."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from connectors.sdk.conformance.helpers import conformance_nats
from events.model import ConversationResolved
from services.bootstrap import event_store
from services.sinks.conformance.fake import FakeHelpdesk
from services.sinks.conformance.kit import KIT_SETTINGS
from services.sinks.conformance.rig import Rig, eventually
from services.sinks.freshdesk import FreshdeskSink
from services.sinks.sdk import Sink, SinkRuntime
from services.sinks.sdk.state import OURS_TTL
from services.sinks.zendesk import ZendeskSink

from .freshdesk_fake import AGENTS as FRESHDESK_AGENTS
from .freshdesk_fake import FakeFreshdesk, freshdesk_config
from .zendesk_fake import AGENTS, FakeZendesk, zendesk_config

pytestmark = pytest.mark.integration


class SlowFirstAgentComment(FakeZendesk):
    """The first agent comment is stored, then the answer comes after the client gave up."""

    slowed = False

    async def _update(self, request: web.Request) -> web.Response:
        body = await request.json()
        comment = body.get("ticket", {}).get("comment") or {}
        if comment.get("author_id") == AGENTS["ava"] and not self.slowed:
            self.slowed = True
            ticket = self.tickets[request.match_info["id"]]
            self._audit(ticket, comment)  # Zendesk stored the comment...
            await asyncio.sleep(2)  # ...and answers after the sink's api_timeout
            return web.json_response({"ticket": self._ticket_json(ticket)})
        ticket = self.tickets[request.match_info["id"]]
        return web.json_response({"ticket": self._ticket_json(ticket), "audit": self._audit(ticket, comment or None)})


class SlowFirstAgentNote(FakeFreshdesk):
    slowed = False

    async def _note(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("user_id") == FRESHDESK_AGENTS["ava"] and not self.slowed:
            self.slowed = True
            answer = await super()._note(request)  # stored...
            await asyncio.sleep(2)  # ...answered too late
            return answer
        return await super()._note(request)


def settings(raw: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**raw, **KIT_SETTINGS, "api_timeout": 0.5, **extra}


@contextlib.asynccontextmanager
async def make_rig(
    tmp_path: Path, fake: FakeHelpdesk, sink_cls: type[Sink], config: Callable[[str], dict[str, Any]], **extra: Any
) -> AsyncIterator[Rig]:
    async with conformance_nats(tmp_path) as (_, nc):
        url = await fake.start()
        store = event_store(nc)

        def make() -> Sink:
            return sink_cls.from_config(settings(config(url), **extra))

        runtime = SinkRuntime(make(), nc, store)
        await runtime.start()
        rig = Rig(nc, store, fake, runtime, make)
        try:
            yield rig
        finally:
            await rig.runtime.stop()
            await fake.stop()


@pytest.mark.parametrize("which", ["zendesk", "freshdesk"])
async def test_a_timed_out_comment_is_not_posted_twice_nor_sent_back(tmp_path: Path, which: str) -> None:
    if which == "zendesk":
        fake: FakeHelpdesk = SlowFirstAgentComment()
        cls, cfg = ZendeskSink, zendesk_config
    else:
        fake, cls, cfg = SlowFirstAgentNote(), FreshdeskSink, freshdesk_config
    agent = str((AGENTS if which == "zendesk" else FRESHDESK_AGENTS)["ava"])
    async with make_rig(tmp_path, fake, cls, cfg) as rig:
        customer, conversation = await rig.open_assigned("My invoice is wrong")
        await rig.agent_replies(customer, conversation, "We refunded you, Ann.")
        await rig.caught_up(customer, timeout=30)
        ticket = fake.ticket_of(conversation)
        assert ticket is not None
        ours = [c for c in ticket.comments if c.author == agent]
        assert [c.body for c in ours] == ["We refunded you, Ann."], "the timed-out comment was posted again"
        # the helpdesk's webhook about that comment is not taken for an agent's reply
        queued = len(await rig.outbound())
        for c in ours:
            status, _ = await rig.post(fake.echo(ticket, c))
            assert status == 200
        await asyncio.sleep(0.5)
        assert [r for r in await rig.replies(customer) if r.actor == f"sink:{which}"] == []
        assert len(await rig.outbound()) == queued


async def test_the_body_marker_outlives_the_post_then_expires(tmp_path: Path) -> None:
    async with make_rig(tmp_path, FakeZendesk(), ZendeskSink, zendesk_config) as rig:
        state = rig.sink.state
        assert await state.posting("77", "Hello") is False
        await state.posted("77", "Hello", "501")
        # a copy Zendesk stored under another id (a timed-out attempt) is still ours
        assert await state.is_ours("77", "502", "Hello")
        assert await state.is_ours("77", "503", "Hello", now=time.time() + OURS_TTL - 5)
        # once the marker expired, the same words written by an agent reach the customer
        assert not await state.is_ours("77", "504", "Hello", now=time.time() + OURS_TTL + 5)
        assert not await state.is_ours("77", "505", "Hello")
        assert await state.is_ours("77", "501", "Hello")  # by id, always


async def test_freshdesk_reply_after_the_first_page_of_conversations_reaches_the_customer(tmp_path: Path) -> None:
    fake = FakeFreshdesk()
    async with make_rig(tmp_path, fake, FreshdeskSink, freshdesk_config) as rig:
        customer, conversation = await rig.open_assigned("first")
        for n in range(30):
            await rig.message(customer, conversation, f"customer line {n}")
        await rig.caught_up(customer, timeout=60)
        ticket = fake.ticket_of(conversation)
        assert ticket is not None
        assert len([c for c in ticket.comments if c.id != "desc"]) >= 30
        status, _ = await rig.post(fake.agent_reply(ticket, "Refund issued, sorry!"))
        assert status == 200

        async def sent() -> list[str]:
            return [r.text for r in await rig.replies(customer) if r.actor == "sink:freshdesk"]

        assert await eventually(sent, timeout=10) == ["Refund issued, sorry!"]


@pytest.mark.parametrize("which", ["zendesk", "freshdesk"])
async def test_an_expired_token_holds_every_event_until_it_is_fixed(tmp_path: Path, which: str) -> None:
    """Audit: the assignment was parked on 401 and the later events of its conversation (the
    agent's reply, the resolve) found no ticket and were dropped; --retry-parked then made a
    ticket without the reply, left open. Now the sink waits on the first refused event."""
    if which == "zendesk":
        fake: FakeHelpdesk = FakeZendesk()
        cls, cfg = ZendeskSink, zendesk_config
    else:
        fake, cls, cfg = FakeFreshdesk(), FreshdeskSink, freshdesk_config
    async with make_rig(tmp_path, fake, cls, cfg, auth_retry_pause=0.2) as rig:
        fake.refuse_auth = True  # the API token expired
        customer, conversation = await rig.open_assigned("My invoice is wrong")
        await rig.message(customer, conversation, "hello?")
        await rig.agent_replies(customer, conversation, "Refund issued.")
        await rig.append(
            ConversationResolved(
                at=datetime.now(UTC),
                customer_id=customer,
                conversation_id=conversation,
                agent_id="ava",
                actor="agent:ava",
            )
        )
        await eventually(lambda: _value(rig.runtime.stalled_on))
        await asyncio.sleep(0.5)
        assert rig.runtime.auth_failed and await rig.sink.state.parked() == []
        assert fake.ticket_of(conversation) is None

        fake.refuse_auth = False  # the operator fixed the token
        await rig.caught_up(customer, timeout=30)
        ticket = fake.ticket_of(conversation)
        assert ticket is not None
        bodies = [c.body for c in ticket.comments]
        assert "hello?" in bodies and "Refund issued." in bodies
        assert ticket.status in ("solved", 4, "4")
        assert not rig.runtime.auth_failed and await rig.sink.state.parked() == []


async def _value(value: Any) -> Any:
    return value
