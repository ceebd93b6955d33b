"""The agent's own voice endpoint (``AgentProfile.voice``, set by ``PATCH /v1/agents/{id}``)
is where her calls ring; the connector's ``agents`` table is only the fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.api.agents import voice_endpoint_problem
from services.bus.embedded import EmbeddedNats
from services.config import AgentSeed
from tests.integration.system import API_TOKEN

from .helpers import Voice, call_params, call_sid, soon, twiml, voice_system

AVA = AgentSeed(id="ava", skills={"general": 3}, languages={"en": 5, "es": 5}, capacity={"voice": 1})


@pytest.mark.parametrize(
    "endpoint",
    ["", "client:ava", "client:ava.smith@acme", "sip:ava@pbx.example.com", "sips:ava@pbx.example.com", "+15553334444"],
)
def test_a_client_identity_a_sip_address_or_a_phone_number_is_accepted(endpoint: str) -> None:
    assert voice_endpoint_problem(endpoint) is None


@pytest.mark.parametrize(
    ("endpoint", "named"),
    [
        ("5553334444", "E.164"),
        ("+1 555 333 4444", "spaces"),
        ("sip:pbx.example.com", "SIP address"),
        ("client:", "Client identity"),
        ("client:ava<x>", "Client identity"),
        ("skype:ava", "E.164"),
    ],
)
def test_anything_else_is_refused_naming_the_problem(endpoint: str, named: str) -> None:
    problem = voice_endpoint_problem(endpoint)
    assert problem is not None and named in problem


async def patch(voice: Voice, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with voice.system.http.patch(voice.system.api + path, json=body, headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.integration
async def test_a_call_rings_the_endpoint_in_the_agents_profile(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    sid = call_sid(21)
    async with voice_system(tmp_path, clean_nats, (AVA,)) as voice:
        status, body = await patch(voice, "/v1/agents/ava", {"voice": "ava phone"})
        assert status == 400 and "voice" in body["error"]
        status, body = await patch(voice, "/v1/agents/ava", {"voice": "sip:ava@desk.example.com"})
        assert status == 200, body
        assert body["voice"] == "sip:ava@desk.example.com"
        assert body["capacity"]["voice"] == 1  # a partial update keeps the rest of the profile

        assert (await voice.webhook("/twilio/voice/queue", call_params(sid, Digits="1")))[0] == 200

        async def bridged() -> list[dict[str, str]] | None:
            calls = [c for c in voice.twilio.calls_api() if c["path"].endswith(f"/Calls/{sid}.json")]
            return calls or None

        [update] = await soon(bridged)
        dial = twiml(update["Twiml"]).find("Dial")
        # Not the connector's table ("client:ava"): the profile wins.
        assert dial is not None and dial.findtext("Sip") == "sip:ava@desk.example.com"
        assert dial.find("Client") is None
