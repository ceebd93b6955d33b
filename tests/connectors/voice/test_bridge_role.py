"""The bridge under the voice connector's own NATS role (the permissions ``relaydesk up``
generates): it may follow the log (a durable on RD_EVENTS, direct gets) to bridge an
accepted call, and still may not append to it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from connectors.sdk.runtime import ConnectorRuntime
from connectors.voice.connector import TwilioVoiceConnector
from events.model import (
    AgentProfile,
    AgentProfileUpdated,
    AgentStatusChanged,
    ConversationAssigned,
    ConversationOpened,
    DecisionReason,
    OfferAccepted,
)
from events.store import Append, EventStore
from events.streams import ensure_streams
from services.bus.auth import RoleCredentials
from services.bus.embedded import EmbeddedNats
from services.bus.permissions import connector_user
from services.up import BUILT_IN_CONNECTORS, connector_channels

from .helpers import ACCOUNT, CALLER, VOICE_TOKEN, FakeTwilio, call_sid, soon

pytestmark = pytest.mark.integration


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, RoleCredentials]]:
    credentials = RoleCredentials.ensure(tmp_path / "data", connector_channels((*BUILT_IN_CONNECTORS, "voice")))
    server = EmbeddedNats(store_dir=tmp_path / "data" / "nats", config_file=credentials.write_server_config())
    server.start()
    try:
        yield server, credentials
    finally:
        server.stop()


async def test_an_accepted_call_is_bridged_by_the_connector_role(
    secured: tuple[EmbeddedNats, RoleCredentials],
) -> None:
    server, credentials = secured
    tool = await nats.connect(server.url, **credentials.auth("tool").connect_options())
    voice_nc = await nats.connect(server.url, **credentials.auth(connector_user("voice")).connect_options())
    twilio = FakeTwilio()
    api = await twilio.start()
    runtime: ConnectorRuntime | None = None
    try:
        await ensure_streams(tool.jetstream())
        connector = TwilioVoiceConnector.from_config(
            {
                "port": 0,
                "auth_token": VOICE_TOKEN,
                "account_sid": ACCOUNT,
                "api_base_url": api,
                "agents": {"bea": "sip:bea@pbx.example.com", "cid": "+15553334444"},
                "outbound": False,
            }
        )
        runtime = ConnectorRuntime(connector, voice_nc)
        await runtime.start()
        store = EventStore(tool, tool.jetstream())
        now = datetime.now(UTC)
        sid = call_sid(7)
        seq = await store.append(
            Append(
                ConversationOpened(
                    at=now,
                    customer_id="cu_1",
                    conversation_id="cv_1",
                    channel="voice",
                    contact=CALLER,
                    provider_message_id=sid,
                ),
                expected=0,
            )
        )
        reason = DecisionReason(rule="best_fit")
        seq = await store.append(
            Append(
                ConversationAssigned(
                    at=now, customer_id="cu_1", conversation_id="cv_1", agent_id="bea", channel="voice", reason=reason
                ),
                expected=seq,
            )
        )
        [first] = await soon(lambda: _calls(twilio))
        assert first["path"].endswith(f"/Calls/{sid}.json")
        assert ET.fromstring(first["Twiml"]).findtext("Dial/Sip") == "sip:bea@pbx.example.com"

        # Cid's own profile names her Twilio Client (read under the role by direct gets); a
        # status change after it on her subject changes nothing.
        await store.append(
            Append(AgentProfileUpdated(at=now, agent_id="cid", profile=AgentProfile(voice="client:cid-desk")))
        )
        await store.append(Append(AgentStatusChanged(at=now, agent_id="cid", status="available")))
        # A transfer accepted by another agent moves the live call to her endpoint.
        offered_again = OfferAccepted(at=now, customer_id="cu_1", conversation_id="cv_1", agent_id="cid")
        await store.append(Append(offered_again, expected=seq))
        second = (await soon(lambda: _calls(twilio, 2)))[1]
        assert ET.fromstring(second["Twiml"]).findtext("Dial/Client") == "cid-desk"

        # An SMS conversation's assignment is none of the bridge's business.
        await store.append(
            Append(
                ConversationOpened(
                    at=now,
                    customer_id="cu_2",
                    conversation_id="cv_2",
                    channel="sms",
                    contact=CALLER,
                    provider_message_id="SM1",
                ),
                expected=0,
            )
        )
        assert runtime.connector.metrics["delivery_failed"] == 0
    finally:
        if runtime is not None:
            await runtime.stop()
        await twilio.stop()
        await voice_nc.close()
        await tool.close()


async def _calls(twilio: FakeTwilio, n: int = 1) -> list[dict[str, str]] | None:
    calls = twilio.calls_api()
    return calls if len(calls) >= n else None
