"""A sink running over a real nats-server beside a fake helpdesk, and what tests need to
drive it: conversations written to the log as intake and the router would, webhooks sent,
and the log and ``rd.out.<channel>`` read back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from events import subjects
from events.codec import decode_reply
from events.model import (
    ConversationAssigned,
    ConversationOpened,
    ConversationResolved,
    DecisionReason,
    DeliverReply,
    LogEvent,
    MessageReceived,
    ReplyRequested,
    Requirements,
    RoutingRequested,
)
from events.store import Append, EventStore

from ..sdk import SettingsSource, Sink, SinkRuntime
from .fake import FakeHelpdesk, WebhookCall

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 15.0, every: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last probe: {last!r})")


@dataclass
class Rig:
    nc: NATS
    store: EventStore
    fake: FakeHelpdesk
    runtime: SinkRuntime
    make_sink: Callable[[], Sink]
    # Where the sink reads its settings again while the helpdesk refuses its credentials.
    settings: SettingsSource | None = None
    channel: str = "sms"
    contact: str = "+15550001111"

    @property
    def sink(self) -> Sink:
        return self.runtime.sink

    @property
    def base_url(self) -> str:
        return self.runtime.urls[0]

    # -- the log, as intake, the router and the agent API write it -----------------------------

    async def append(self, event: LogEvent) -> int:
        subject = subjects.for_event(event)
        return await self.store.append(Append(event, expected=await self.store.last_subject_seq(subject)))

    async def open_assigned(self, text: str = "My invoice is wrong", *, agent_id: str = "ava") -> tuple[str, str]:
        """A new conversation with one customer message, assigned to ``agent_id``."""
        customer, conversation = "cu" + uuid.uuid4().hex[:10], "cv" + uuid.uuid4().hex[:10]
        now = datetime.now(UTC)
        common: dict[str, Any] = {"at": now, "customer_id": customer, "conversation_id": conversation}
        await self.append(ConversationOpened(**common, channel=self.channel, contact=self.contact))
        await self.message(customer, conversation, text)
        await self.append(
            RoutingRequested(
                **common, channel=self.channel, requirements=Requirements(skills={"billing": 2}, language="en")
            )
        )
        await self.append(
            ConversationAssigned(**common, agent_id=agent_id, channel=self.channel, reason=DecisionReason(rule="test"))
        )
        return customer, conversation

    async def message(self, customer: str, conversation: str, text: str) -> str:
        message_id = "m" + uuid.uuid4().hex[:12]
        await self.append(
            MessageReceived(
                at=datetime.now(UTC),
                customer_id=customer,
                conversation_id=conversation,
                channel=self.channel,
                message_id=message_id,
                provider_message_id="p" + message_id,
                text=text,
                language="en",
            )
        )
        return message_id

    async def agent_replies(self, customer: str, conversation: str, text: str, agent_id: str = "ava") -> str:
        """An agent answers in Relaydesk (the console, the agent API)."""
        reply_id = "rp_" + uuid.uuid4().hex[:20]
        await self.append(
            ReplyRequested(
                at=datetime.now(UTC),
                customer_id=customer,
                conversation_id=conversation,
                channel=self.channel,
                reply_id=reply_id,
                agent_id=agent_id,
                text=text,
                actor=f"agent:{agent_id}",
            )
        )
        return reply_id

    async def events(self, customer: str, kind: type[T]) -> list[T]:
        return [s.event for s in await self.store.read_customer_direct(customer) if isinstance(s.event, kind)]

    async def replies(self, customer: str) -> list[ReplyRequested]:
        return await self.events(customer, ReplyRequested)

    async def resolutions(self, customer: str) -> list[ConversationResolved]:
        return await self.events(customer, ConversationResolved)

    async def outbound(self) -> list[DeliverReply]:
        """Every ``DeliverReply`` waiting on ``rd.out.<channel>`` (opened), oldest first."""
        js = self.nc.jetstream()
        subject = subjects.outbound(self.channel)
        out: list[DeliverReply] = []
        seq = 1
        while True:
            try:
                raw = await js.get_msg(subjects.OUTBOUND_STREAM, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            reply = decode_reply(raw.data or b"")
            out.append(await self.store.cipher.open_reply(reply) if self.store.cipher else reply)
            seq = int(raw.seq or seq) + 1
        return out

    # -- the helpdesk's webhooks -------------------------------------------------------------------

    async def post(self, call: WebhookCall) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.base_url + call.path, data=call.body, headers=call.headers) as resp,
        ):
            return resp.status, await resp.json(content_type=None)

    # -- the sink's life --------------------------------------------------------------------------

    async def caught_up(self, customer: str, timeout: float = 15.0) -> None:
        """Until the sink has handled every event of ``customer`` in the log so far."""
        last = (await self.store.read_customer_direct(customer))[-1].seq

        async def probe() -> bool:
            return self.runtime.position >= last

        await eventually(probe, timeout)

    async def restart(self, *, replay: bool = False) -> None:
        """Stop the sink and start a new instance (``replay``: from the beginning of the log,
        as if its position had been lost)."""
        await self.runtime.stop()
        if replay:
            await self.sink.state.save_position(0)
        self.runtime = SinkRuntime(self.make_sink(), self.nc, self.store, settings=self.settings)
        await self.runtime.start()
