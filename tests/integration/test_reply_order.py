"""A conversation's replies go out in the order they were written, with two connector
processes of the channel sharing its outbound queue (found by a chaos audit: a reply one process
was retrying through a provider outage went out after the later replies the other process had
sent meanwhile; 18 of 48 conversations read out of order on the customer's phone)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec
import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from connectors.sdk.outbound import durable_name
from connectors.sdk.runtime import ConnectorRuntime
from connectors.sms.connector import TwilioSmsConnector
from events import subjects
from events.model import DeliveryFailed, MessageSent
from services.bus.embedded import EmbeddedNats
from tests.fake_http import serving_posts
from tests.integration.fake_twilio import FakeTwilio, with_fake_twilio
from tests.integration.system import eventually, running_system, system_config
from tests.integration.test_replies import reply, sms_conversation

pytestmark = pytest.mark.integration


class FirstReplyRefused(FakeTwilio):
    """Twilio answering 503 to the first ``refusals`` tries of the text ``first``, 201 to the rest."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.tried: list[str] = []

    async def create(self, request: web.Request) -> web.Response:
        body = str((await request.post()).get("Body", ""))
        self.tried.append(body)
        if body == "first" and self.tried.count("first") <= self.refusals:
            return web.json_response({"code": 20503, "message": "Service Unavailable"}, status=503)
        return await super().create(request)


async def test_a_reply_retried_by_one_connector_process_is_not_overtaken_by_the_next_one(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    fake = FirstReplyRefused(refusals=4)
    async with serving_posts({"/2010-04-01/Accounts/{sid}/Messages.json": fake.create}) as base_url:
        config = system_config(tmp_path, clean_nats.url)
        with_fake_twilio(config, base_url)
        config.connectors["sms"].update(deliver_backoff=0.3, deliver_backoff_max=0.6, outbound_fetch_timeout=0.3)
        config.api = msgspec.structs.replace(config.api, reply_requeue_seconds=60.0)  # not the relay's sweep
        async with running_system(config, clean_nats) as system:
            # The channel's second connector process, sharing the outbound durable.
            nc = await nats.connect(clean_nats.url)
            second = ConnectorRuntime(TwilioSmsConnector.from_config({**config.connectors["sms"], "port": 0}), nc)
            await second.start()
            try:
                # Both processes pulling before the first reply: the second's worker subscribes
                # after start() returns, and one not yet there left the other process to send
                # both replies in turn, and the test passed without the race it is about.
                await eventually(lambda: _pulling(nc, durable_name(second.connector), 2), timeout=30)
                customer_id, conv = await sms_conversation(system, "SM" + "a" * 32, "+15551230190")
                await reply(system, conv, "first")
                # One process is retrying it (pausing between tries); the other is free.
                await eventually(lambda: _at_least(fake.tried.count("first"), 2))
                await reply(system, conv, "second")
                await eventually(lambda: _at_least(len(fake.messages), 2), timeout=30)

                async def outcomes() -> list[object] | None:
                    found = [
                        e.event
                        for e in await system.customer_log(customer_id)
                        if isinstance(e.event, MessageSent | DeliveryFailed)
                    ]
                    return found if len(found) >= 2 else None

                recorded = await eventually(outcomes, timeout=30)
            finally:
                await second.stop()
                with contextlib.suppress(Exception):
                    await nc.close()
    assert [m["Body"] for m in fake.messages] == ["first", "second"]
    assert all(isinstance(e, MessageSent) for e in recorded)


async def _at_least(n: int, wanted: int) -> bool:
    return n >= wanted


async def _pulling(nc: NATS, durable: str, processes: int) -> bool:
    """``processes`` fetch requests wait on the outbound ``durable`` (one per process)."""
    info = await nc.jetstream().consumer_info(subjects.OUTBOUND_STREAM, durable)
    return (info.num_waiting or 0) >= processes
