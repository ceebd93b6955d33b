"""Any connector's webhooks against a hostile client (the SDK's share, shown on the SMS and
voice connectors): a body that trickles in, an id from the provider that no NATS header can
carry on a route that publishes by itself.

Over the session's nats-server, outbound off (see ``test_sms_inbound``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from connectors.sdk import http
from connectors.sdk.conformance.helpers import read_inbound
from connectors.sdk.runtime import ConnectorRuntime
from connectors.sms.connector import TwilioSmsConnector
from connectors.voice.connector import TwilioVoiceConnector
from tests.trickle import answer_to_trickling_body

from .test_sms_inbound import TOKEN, signed_headers

pytestmark = pytest.mark.integration


@pytest.fixture
async def sms(nc: NATS, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setattr(http, "BODY_TIMEOUT", 0.5)
    connector = TwilioSmsConnector.from_config({"port": 0, "auth_token": TOKEN, "outbound": False})
    runtime = ConnectorRuntime(connector, nc)
    [base] = await runtime.start()
    try:
        yield base
    finally:
        await runtime.stop()


async def test_a_body_that_trickles_in_is_408_not_held_for_ever(sms: str) -> None:
    """The idle timeout closed a connection whose head trickled in, not one whose body did:
    a head with Content-Length and then silence held a request (and its handler) open."""
    head = await answer_to_trickling_body(
        sms, "/twilio/sms", content_type="application/x-www-form-urlencoded", start=b"MessageSid=SM"
    )
    assert head.startswith(b"HTTP/1.1 408 "), head


@pytest.fixture
async def voice(nc: NATS) -> AsyncIterator[str]:
    settings = {"port": 0, "auth_token": TOKEN, "outbound": False, "bridge": False}
    runtime = ConnectorRuntime(TwilioVoiceConnector.from_config(settings), nc)
    [base] = await runtime.start()
    try:
        yield base
    finally:
        await runtime.stop()


async def test_a_provider_id_with_a_line_break_is_400_on_a_route_that_publishes_itself(
    nc: NATS, voice: str, uid: str
) -> None:
    """The voicemail route publishes ``RecordingSid`` as the message id (Nats-Msg-Id) as
    given: a CR LF in it wrote headers of the sender's choosing into the published message."""
    url = voice + "/twilio/voice/recorded"
    params = {
        "CallSid": "CA" + uid.ljust(32, "0"),
        "From": "+15557770123",
        "To": "+15550001111",
        "RecordingUrl": "https://api.twilio.com/recordings/RE1",
        "RecordingSid": f"RE{uid}\r\nNats-Expected-Last-Sequence: 5",
    }
    async with (
        aiohttp.ClientSession() as client,
        client.post(url, data=urlencode(params), headers=signed_headers(url, params)) as resp,
    ):
        assert resp.status == 400
        assert "control characters" in (await resp.json())["error"]
    assert [p for p in await read_inbound(nc.jetstream(), "voice") if uid in p.message.provider_message_id] == []
