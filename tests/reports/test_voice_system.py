"""Calls through the whole system over a real nats-server (the voice connector, a fake Twilio),
then their figures in GET /v1/reports/service: one answered, one abandoned then called back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.bus.embedded import EmbeddedNats
from services.config import AgentSeed
from tests.connectors.voice.helpers import call_params, call_sid, soon, voice_system

pytestmark = pytest.mark.integration

AVA = AgentSeed(id="ava", skills={"general": 3}, languages={"en": 5}, capacity={"voice": 1})
OTHER_CALLER = "+15557770999"


async def test_an_answered_call_and_an_abandoned_one_in_the_service_report(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    first, second = call_sid(31), call_sid(32)
    async with voice_system(tmp_path, clean_nats, (AVA,)) as voice:
        assert (await voice.webhook("/twilio/voice/queue", call_params(first, Digits="1")))[0] == 200

        async def bridged(sid: str) -> bool:
            return any(c["path"].endswith(f"/Calls/{sid}.json") for c in voice.twilio.calls_api())

        await soon(lambda: bridged(first))
        # Ava is on the first call; the second caller waits, then hangs up.
        other = {"From": OTHER_CALLER, "Caller": OTHER_CALLER}
        assert (await voice.webhook("/twilio/voice/queue", call_params(second, Digits="1", **other)))[0] == 200
        voice.twilio.ended.add(second)
        hung_up = call_params(second, CallStatus="completed", CallDuration="40", **other)
        assert (await voice.webhook("/twilio/voice/status", hung_up))[0] == 200

        async def abandoned() -> dict[str, Any] | None:
            status, body = await voice.system.get("/v1/reports/service")
            assert status == 200, body
            calls = body["total"]["voice"]
            return calls if calls and calls["abandoned"] == 1 else None

        await soon(abandoned)
        # Ava's call ends: her conversation is resolved and she takes the second one (a callback).
        talked = call_params(first, CallStatus="in-progress", DialCallStatus="completed", DialCallDuration="95")
        assert (await voice.webhook("/twilio/voice/status", talked))[0] == 200

        async def done() -> dict[str, Any] | None:
            status, body = await voice.system.get("/v1/reports/service", group_by="agent")
            assert status == 200, body
            calls = body["total"]["voice"]
            return body if calls and calls["answered"] == 1 and calls["callbacks_placed"] == 1 else None

        report = await soon(done)
        calls = report["total"]["voice"]
        assert (calls["calls"], calls["abandoned"], calls["missed"], calls["abandon_rate"]) == (2, 1, 1, 0.5)
        assert calls["answered_within_sla"] == 1 and calls["service_level"] == 0.5
        assert calls["handle_seconds"]["count"] == 1
        assert report["sla_seconds"]["voice"] == 20.0
        [ava] = [g for g in report["groups"] if g["key"] == "ava"]
        assert ava["voice"]["calls"] == 2

        async def called_back() -> bool:
            return any(c["path"].endswith("/Calls.json") for c in voice.twilio.calls_api())

        assert await soon(called_back)
