"""A call over a real nats-server: greeting and language menu, queued with hold music while
the router works, assigned, bridged to the agent (the TwiML checked), status callbacks on
the timeline; past the wait limit a callback or a voicemail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from multidict import MultiDict, MultiDictProxy

from connectors.sdk import Malformed
from connectors.voice.connector import _call_sid
from services.bus.embedded import EmbeddedNats
from services.config import AgentSeed

from .helpers import CALLER, OUR_NUMBER, Voice, call_params, call_sid, soon, twiml, voice_system

pytestmark = pytest.mark.integration

AVA = AgentSeed(
    id="ava", skills={"general": 3, "billing": 3}, languages={"en": 5, "es": 5}, capacity={"voice": 1, "chat": 3}
)


async def customer_of(voice: Voice) -> str | None:
    status, body = await voice.system.get("/v1/customers", identity=f"sms:{CALLER}")
    return body["customers"][0]["customer_id"] if status == 200 else None


async def timeline(voice: Voice, customer_id: str) -> list[dict[str, Any]]:
    status, body = await voice.system.get(f"/v1/customers/{customer_id}/timeline", limit="100")
    assert status == 200, body
    return body["entries"]  # type: ignore[no-any-return]


async def test_a_call_is_queued_assigned_and_bridged_to_the_agent(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    sid = call_sid(1)
    async with voice_system(tmp_path, clean_nats, (AVA,)) as voice:
        status, text = await voice.webhook("/twilio/voice", call_params(sid))
        assert status == 200
        gather = twiml(text).find("Gather")
        assert gather is not None and gather.get("numDigits") == "1"
        assert gather.get("action") == "/twilio/voice/queue"
        assert "español" in "".join(gather.itertext())

        status, text = await voice.webhook("/twilio/voice/queue", call_params(sid, Digits="2"))
        assert status == 200
        enqueue = twiml(text).find("Enqueue")
        assert enqueue is not None and enqueue.text == "relaydesk"
        assert enqueue.get("waitUrl") == "/twilio/voice/wait"
        # A retried webhook is the same call, not a second conversation.
        assert (await voice.webhook("/twilio/voice/queue", call_params(sid, Digits="2")))[0] == 200

        customer_id = await soon(lambda: customer_of(voice))
        conv = await soon(lambda: voice.system.conversation_of(customer_id))
        assert (conv["channel"], conv["agent_id"], conv["status"]) == ("voice", "ava", "assigned")

        [update] = await soon(lambda: _calls(voice))
        assert update["path"] == f"/2010-04-01/Accounts/{update['path'].split('/')[3]}/Calls/{sid}.json"
        dial = twiml(update["Twiml"]).find("Dial")
        assert dial is not None and dial.findtext("Client") == "ava"
        assert dial.get("action") == "/twilio/voice/status?agent=ava"

        # Meanwhile a chat-like message (SMS) from another customer: Ava is on the call.
        assert await voice.system.send_sms("SM" + "5" * 32, "+15556660000", "hello, my invoice is wrong") == 200
        sms_customer = await soon(lambda: voice.system.customer("+15556660000"))
        sms_conv = await soon(lambda: _conversation(voice, sms_customer))
        assert sms_conv["agent_id"] is None

        # The agent hangs up: the <Dial> action reports it, the call's conversation is resolved.
        ended = call_params(sid, CallStatus="in-progress", DialCallStatus="completed", DialCallDuration="118")
        assert (await voice.webhook("/twilio/voice/status", ended))[0] == 200
        resolved = await soon(lambda: _resolved(voice, conv["id"]))
        assert resolved["status"] == "resolved"
        # ... and the SMS that waited is Ava's now.
        offered = await soon(lambda: voice.system.conversation_of(sms_customer))
        assert offered["agent_id"] == "ava"

        done = call_params(sid, CallStatus="completed", CallDuration="125")
        assert (await voice.webhook("/twilio/voice/status", done))[0] == 200

        entries = await soon(lambda: _texts(voice, customer_id, "Call completed (118 s)"))
        assert (entries[0]["channel"], entries[0]["conversation_id"]) == ("voice", conv["id"])
        # The caller's own "completed", after the conversation was resolved, opens nothing new.
        status, body = await voice.system.get("/v1/conversations")
        assert [
            c["id"] for c in body["conversations"] if c["customer_id"] == customer_id and c["status"] != "resolved"
        ] == []


async def test_a_late_status_of_another_call_leaves_the_callers_conversation_open(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    """Found by an attack test: any ``DialCallStatus=completed`` from the caller's number
    resolved the caller's open conversation, even for another (an earlier) call."""
    sid, other = call_sid(11), call_sid(12)
    async with voice_system(tmp_path, clean_nats, (AVA,)) as voice:
        assert (await voice.webhook("/twilio/voice/queue", call_params(sid, Digits="1")))[0] == 200
        customer_id = await soon(lambda: customer_of(voice))
        conv = await soon(lambda: voice.system.conversation_of(customer_id))
        late = call_params(other, CallStatus="completed", DialCallStatus="completed", DialCallDuration="30")
        assert (await voice.webhook("/twilio/voice/status", late))[0] == 200
        await soon(lambda: _texts(voice, customer_id, "Call completed (30 s)"))
        status, body = await voice.system.get(f"/v1/conversations/{conv['id']}")
        assert status == 200 and body["status"] != "resolved", body
        # This call's own end resolves it.
        ended = call_params(sid, CallStatus="in-progress", DialCallStatus="completed", DialCallDuration="90")
        assert (await voice.webhook("/twilio/voice/status", ended))[0] == 200
        await soon(lambda: _resolved(voice, conv["id"]))


async def test_a_caller_who_hangs_up_in_the_queue_leaves_no_call_to_offer(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    """Found by an audit: the caller hung up while queued and the conversation stayed waiting,
    so the router would still offer an agent a dead call."""
    sid = call_sid(14)
    away = msgspec.structs.replace(AVA, status="away")
    async with voice_system(tmp_path, clean_nats, (away,)) as voice:
        assert (await voice.webhook("/twilio/voice/queue", call_params(sid, Digits="1")))[0] == 200
        customer_id = await soon(lambda: customer_of(voice))
        conv = await soon(lambda: _conversation(voice, customer_id))  # waiting: nobody is available
        status, text = await voice.webhook("/twilio/voice/left", call_params(sid, QueueResult="hangup", QueueTime="12"))
        assert status == 200 and twiml(text).find("Gather") is None
        await soon(lambda: _texts(voice, customer_id, "Caller hung up in the queue (12 s)"))
        await soon(lambda: _resolved(voice, conv["id"]))
        # Its own status callback comes too: answered, and nothing reopened (it opens nothing).
        ended = call_params(sid, CallStatus="completed", CallDuration="14")
        assert (await voice.webhook("/twilio/voice/status", ended))[0] == 200
        status, body = await voice.system.get(f"/v1/conversations/{conv['id']}")
        assert status == 200 and body["status"] == "resolved", body


@pytest.mark.parametrize("caller", ["anonymous", "+266696687", "client:alice"])
async def test_a_caller_without_a_number_is_told_so_not_queued(
    tmp_path: Path, clean_nats: EmbeddedNats, caller: str
) -> None:
    """Intake records a call by the caller's number: without one (withheld, a Twilio Client)
    the caller held in the queue for an agent nobody would ever put through."""
    async with voice_system(tmp_path, clean_nats, (AVA,)) as voice:
        before = await voice.system.inbound_count()
        status, text = await voice.webhook("/twilio/voice", call_params(call_sid(13), From=caller))
        assert status == 200
        document = twiml(text)
        assert document.find("Enqueue") is None and document.find("Gather") is None
        assert document.find("Hangup") is not None
        assert "withheld number" in (document.findtext("Say") or "")
        assert await voice.system.inbound_count() == before


async def test_a_bad_signature_is_refused_and_publishes_nothing(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    async with voice_system(tmp_path, clean_nats, (AVA,)) as voice:
        before = await voice.system.inbound_count()
        status, _ = await voice.webhook("/twilio/voice/queue", call_params(call_sid(2), Digits="1"), token="wrong")
        assert status == 403
        assert await voice.system.inbound_count() == before


async def test_past_the_wait_limit_a_callback_request_is_offered_and_accepting_places_the_call(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    sid = call_sid(3)
    away = msgspec.structs.replace(AVA, status="away")
    async with voice_system(tmp_path, clean_nats, (away,), wait_limit_seconds=60) as voice:
        assert (await voice.webhook("/twilio/voice/queue", call_params(sid, Digits="1")))[0] == 200
        _, text = await voice.webhook("/twilio/voice/wait", call_params(sid, QueueTime="20", QueuePosition="1"))
        play = twiml(text).find("Play")
        assert play is not None and play.text and play.text.endswith(".mp3")
        _, text = await voice.webhook("/twilio/voice/wait", call_params(sid, QueueTime="61", QueuePosition="1"))
        assert twiml(text).find("Leave") is not None
        _, text = await voice.webhook("/twilio/voice/left", call_params(sid, QueueResult="leave", QueueTime="61"))
        menu = twiml(text).find("Gather")
        assert menu is not None and menu.get("action") == "/twilio/voice/after"
        status, text = await voice.webhook("/twilio/voice/after", call_params(sid, Digits="1"))
        assert status == 200 and twiml(text).find("Hangup") is not None
        voice.twilio.ended.add(sid)  # the caller hung up: the call can no longer be redirected

        customer_id = await soon(lambda: customer_of(voice))

        async def requested() -> bool:
            return any(e.get("text") == "Callback requested" for e in await timeline(voice, customer_id))

        await soon(requested)
        status, body = await voice.system.post("/v1/agents/ava/status", {"status": "available"})
        assert status in (200, 202), body

        async def placed() -> list[dict[str, str]]:
            return [c for c in await _calls(voice) if c["path"].endswith("/Calls.json")]

        [call] = await soon(placed)
        assert (call["To"], call["From"]) == ("client:ava", OUR_NUMBER)
        dial = twiml(call["Twiml"]).find("Dial")
        assert dial is not None and dial.findtext("Number") == CALLER and dial.get("callerId") == OUR_NUMBER


async def test_a_voicemail_becomes_a_message_with_its_recording_and_transcript(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    sid = call_sid(4)
    away = msgspec.structs.replace(AVA, status="away")
    async with voice_system(tmp_path, clean_nats, (away,)) as voice:
        assert (await voice.webhook("/twilio/voice/queue", call_params(sid, Digits="1")))[0] == 200
        _, text = await voice.webhook("/twilio/voice/after", call_params(sid))  # no key: the voicemail
        record = twiml(text).find("Record")
        assert record is not None and record.get("action") == "/twilio/voice/recorded"
        assert record.get("transcribeCallback") == "/twilio/voice/transcribed"
        recording = f"https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE{'1' * 32}"
        recorded = call_params(sid, RecordingUrl=recording, RecordingSid="RE" + "1" * 32, RecordingDuration="14")
        status, text = await voice.webhook("/twilio/voice/recorded", recorded)
        assert status == 200 and twiml(text).find("Hangup") is not None
        transcribed = call_params(
            sid,
            TranscriptionSid="TR" + "1" * 32,
            TranscriptionText="Hi, my invoice is wrong, please call me back",
            TranscriptionStatus="completed",
            RecordingSid="RE" + "1" * 32,
            RecordingUrl=recording,
        )
        assert (await voice.webhook("/twilio/voice/transcribed", transcribed))[0] == 200

        customer_id = await soon(lambda: customer_of(voice))

        async def both() -> list[dict[str, Any]] | None:
            entries = await timeline(voice, customer_id)
            mail = [e for e in entries if e.get("text") == "Voicemail"]
            said = [e for e in entries if e.get("text") == "Hi, my invoice is wrong, please call me back"]
            return mail + said if mail and said else None

        voicemail, _transcript = await soon(both)
        [attachment] = voicemail["detail"]["attachments"]
        assert attachment["url"].startswith("/v1/attachments/")  # a signed link to the recording
        assert attachment["content_type"] == "audio/x-wav"


async def _calls(voice: Voice) -> list[dict[str, str]]:
    return voice.twilio.calls_api()


async def _texts(voice: Voice, customer_id: str, text: str) -> list[dict[str, Any]]:
    return [e for e in await timeline(voice, customer_id) if e.get("text") == text]


async def _conversation(voice: Voice, customer_id: str) -> dict[str, Any] | None:
    status, body = await voice.system.get("/v1/conversations")
    assert status == 200, body
    return next((c for c in body["conversations"] if c["customer_id"] == customer_id), None)


async def _resolved(voice: Voice, conversation_id: str) -> dict[str, Any] | None:
    status, body = await voice.system.get(f"/v1/conversations/{conversation_id}")
    conv = body.get("conversation", body) if status == 200 else {}
    return conv if conv.get("status") == "resolved" else None


@pytest.mark.parametrize("sid", ["CA١٢٣", "CA²", "CAab cd", "CA>", "CA1.*", "AB123", "CA"])
def test_a_call_sid_is_ascii_letters_and_digits_only(sid: str) -> None:
    with pytest.raises(Malformed, match="CallSid"):
        _call_sid(MultiDictProxy(MultiDict(CallSid=sid)))
    assert _call_sid(MultiDictProxy(MultiDict(CallSid=call_sid(7)))) == call_sid(7)
