"""Two voice connector processes (``replicas: 2``) bridge each accepted call once.

The bridges share one durable on the log and take up to 100 events a fetch. Each bridge is a
Calls API request that may take seconds (Twilio slow, retries within ``dial_timeout``): while
one process worked through a batch holding several accepted calls, the later ones passed the
consumer's ack wait and were handed to the other process, which redirected the same call again
(the agent's phone rang anew) or, for a caller gone, placed a second callback."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from connectors.sdk.runtime import ConnectorRuntime
from connectors.voice import bridge
from connectors.voice.connector import TwilioVoiceConnector
from events.model import ConversationAssigned, ConversationOpened, DecisionReason
from events.store import Append, EventStore
from events.streams import ensure_streams
from services.bus.embedded import EmbeddedNats
from tests.integration.system import eventually

from .helpers import ACCOUNT, CALLER, VOICE_TOKEN, FakeTwilio, call_sid

pytestmark = pytest.mark.integration

CALLS = 5
ANSWER_S = 0.8  # each Calls API answer: the batch takes ~4 s, twice the ack wait below
ACK_WAIT_S = 2.0


class SlowTwilio(FakeTwilio):
    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(ANSWER_S)
        return await super()._answer(request)


@pytest.fixture
async def nc(clean_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(clean_nats.url)
    await ensure_streams(client.jetstream())
    try:
        yield client
    finally:
        await client.close()


async def test_two_voice_processes_bridge_each_accepted_call_once(
    clean_nats: EmbeddedNats, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge, "ACK_WAIT_S", ACK_WAIT_S)
    twilio = SlowTwilio()
    api = await twilio.start()
    clients = [await nats.connect(clean_nats.url) for _ in range(2)]
    runtimes: list[ConnectorRuntime] = []
    try:
        for client in clients:
            connector = TwilioVoiceConnector.from_config(
                {
                    "port": 0,
                    "auth_token": VOICE_TOKEN,
                    "account_sid": ACCOUNT,
                    "api_base_url": api,
                    "agents": {"bea": "sip:bea@pbx.example.com"},
                    "outbound": False,
                }
            )
            runtime = ConnectorRuntime(connector, client)
            await runtime.start()
            runtimes.append(runtime)
        store = EventStore(nc, nc.jetstream())
        now = datetime.now(UTC)
        reason = DecisionReason(rule="best_fit")
        appends: list[Append] = []
        for n in range(CALLS):
            cu, cv = f"cu_{n}", f"cv_{n}"
            opened = ConversationOpened(
                at=now,
                customer_id=cu,
                conversation_id=cv,
                channel="voice",
                contact=CALLER,
                provider_message_id=call_sid(n),
            )
            assigned = ConversationAssigned(
                at=now, customer_id=cu, conversation_id=cv, agent_id="bea", channel="voice", reason=reason
            )
            appends += [Append(opened, expected=0), Append(assigned)]
        # All at once: one fetch of one process takes every accepted call.
        await store.append_many(appends)

        async def all_bridged() -> bool:
            return len(twilio.calls_api()) >= CALLS

        assert await eventually(all_bridged, timeout=40)
        # Past two more ack waits: a call handed to the other process would have been bridged again by now.
        deadline = asyncio.get_running_loop().time() + 3 * ACK_WAIT_S + CALLS * ANSWER_S
        while asyncio.get_running_loop().time() < deadline:
            if max(Counter(c["path"] for c in twilio.calls_api()).values()) > 1:
                break
            await asyncio.sleep(0.1)
        per_call = Counter(c["path"].rsplit("/", 1)[-1] for c in twilio.calls_api())
        assert per_call == {f"{call_sid(n)}.json": 1 for n in range(CALLS)}, per_call
    finally:
        for runtime in runtimes:
            await runtime.stop()
        for client in clients:
            await client.close()
        await twilio.stop()
