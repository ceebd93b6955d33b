"""Found by an audit: a call the agent never answered stayed assigned to her for ever (and
her voice-exclusive hold blocked all her other work); a bridge the Calls API refused with 429
or 5xx was never tried again. Over a real nats-server, as ``test_calls``."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.bus.embedded import EmbeddedNats
from services.config import AgentSeed

from .helpers import Voice, call_params, call_sid, soon, twiml, voice_system
from .test_calls import _calls, _conversation, _resolved, _texts, customer_of

pytestmark = pytest.mark.integration

SKILLS = {"general": 3, "billing": 3}
AVA = AgentSeed(id="ava", skills=SKILLS, languages={"en": 5}, capacity={"voice": 1, "sms": 3})
BEA = AgentSeed(id="bea", skills=SKILLS, languages={"en": 5}, capacity={"voice": 1, "sms": 3}, status="away")


async def _assigned(voice: Voice, customer_id: str, agent_id: str | None) -> dict[str, object] | None:
    conv = await _conversation(voice, customer_id)
    return conv if conv is not None and conv["agent_id"] == agent_id else None


async def _dials(voice: Voice, n: int) -> list[dict[str, str]] | None:
    updates = [c for c in await _calls(voice) if not c["path"].endswith("/Calls.json")]
    return updates if len(updates) >= n else None


@pytest.mark.parametrize("dial_status", ["no-answer", "busy", "canceled", "failed"])
async def test_an_unanswered_call_goes_back_to_waiting_without_the_agent(
    tmp_path: Path, clean_nats: EmbeddedNats, dial_status: str
) -> None:
    sid = call_sid(31)
    async with voice_system(tmp_path, clean_nats, (AVA, BEA), languages={}) as voice:
        assert (await voice.webhook("/twilio/voice", call_params(sid)))[0] == 200
        customer_id = await soon(lambda: customer_of(voice))
        conv = await soon(lambda: _assigned(voice, customer_id, "ava"))
        [update] = await soon(lambda: _dials(voice, 1))
        dial = twiml(update["Twiml"]).find("Dial")
        assert dial is not None and dial.get("action") == "/twilio/voice/status?agent=ava"

        unanswered = call_params(sid, CallStatus="in-progress", DialCallStatus=dial_status, DialCallDuration="0")
        status, text = await voice.webhook("/twilio/voice/status?agent=ava", unanswered)
        assert status == 200 and twiml(text).find("Enqueue") is not None  # the caller waits again
        # Back to waiting, not Ava's: she is free for other work (an SMS) ...
        await soon(lambda: _assigned(voice, customer_id, None))
        assert await voice.system.send_sms("SM" + "6" * 32, "+15556660001", "hello, my invoice is wrong") == 200
        sms_customer = await soon(lambda: voice.system.customer("+15556660001"))
        await soon(lambda: _assigned(voice, sms_customer, "ava"))
        # ... and another agent gets the call, which is put through to her.
        status, body = await voice.system.post("/v1/agents/bea/status", {"status": "available"})
        assert status in (200, 202), body
        await soon(lambda: _assigned(voice, customer_id, "bea"))
        [_, second] = await soon(lambda: _dials(voice, 2))
        dial = twiml(second["Twiml"]).find("Dial")
        assert dial is not None and dial.findtext("Sip") == "sip:bea@pbx.example.com"
        assert (await _conversation(voice, customer_id) or {})["id"] == conv["id"]


async def test_a_caller_who_hangs_up_while_the_agent_rings_leaves_no_call(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    sid = call_sid(32)
    async with voice_system(tmp_path, clean_nats, (AVA,), languages={}) as voice:
        assert (await voice.webhook("/twilio/voice", call_params(sid)))[0] == 200
        customer_id = await soon(lambda: customer_of(voice))
        conv = await soon(lambda: _assigned(voice, customer_id, "ava"))
        await soon(lambda: _dials(voice, 1))
        ended = call_params(sid, CallStatus="completed", CallDuration="40")
        assert (await voice.webhook("/twilio/voice/status", ended))[0] == 200
        await soon(lambda: _texts(voice, customer_id, "Call completed (40 s)"))
        await soon(lambda: _resolved(voice, str(conv["id"])))
        # Ava is free again: an SMS is hers.
        assert await voice.system.send_sms("SM" + "7" * 32, "+15556660002", "hello, my invoice is wrong") == 200
        sms_customer = await soon(lambda: voice.system.customer("+15556660002"))
        await soon(lambda: _assigned(voice, sms_customer, "ava"))


async def test_a_late_no_answer_for_an_agent_who_no_longer_holds_the_call_changes_nothing(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    sid = call_sid(33)
    async with voice_system(tmp_path, clean_nats, (AVA,), languages={}) as voice:
        assert (await voice.webhook("/twilio/voice", call_params(sid)))[0] == 200
        customer_id = await soon(lambda: customer_of(voice))
        await soon(lambda: _assigned(voice, customer_id, "ava"))
        stale = call_params(sid, CallStatus="in-progress", DialCallStatus="no-answer")
        assert (await voice.webhook("/twilio/voice/status?agent=bea", stale))[0] == 200
        await soon(lambda: _texts(voice, customer_id, "Call no answer"))
        assert await _assigned(voice, customer_id, "ava") is not None


async def test_a_bridge_refused_with_429_is_retried_after_retry_after(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    sid = call_sid(51)
    async with voice_system(tmp_path, clean_nats, (AVA,), languages={}) as voice:
        voice.twilio.refusals.extend([(429, "1"), (503, "")])
        assert (await voice.webhook("/twilio/voice", call_params(sid)))[0] == 200
        customer_id = await soon(lambda: customer_of(voice))
        updates = await soon(lambda: _dials(voice, 3))
        assert len(updates) == 3 and not voice.twilio.refusals
        assert await _assigned(voice, customer_id, "ava") is not None


async def test_a_bridge_refused_until_the_dial_timeout_hands_the_call_back(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    sid = call_sid(52)
    async with voice_system(tmp_path, clean_nats, (AVA, BEA), languages={}, dial_timeout=2) as voice:
        voice.twilio.refusals.extend([(500, "")] * 10)
        assert (await voice.webhook("/twilio/voice", call_params(sid)))[0] == 200
        customer_id = await soon(lambda: customer_of(voice))
        await soon(lambda: _dials(voice, 2))
        # Twilio kept refusing: the call waits again, not Ava's.
        await soon(lambda: _assigned(voice, customer_id, None))
        voice.twilio.refusals.clear()
        status, body = await voice.system.post("/v1/agents/bea/status", {"status": "available"})
        assert status in (200, 202), body
        await soon(lambda: _assigned(voice, customer_id, "bea"))

        async def to_bea() -> list[str] | None:
            targets = [twiml(u["Twiml"]).findtext("Dial/Sip") for u in await _dials(voice, 1) or []]
            return [t for t in targets if t == "sip:bea@pbx.example.com"] or None

        await soon(to_bea)
