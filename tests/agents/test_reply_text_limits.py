"""A reply longer than its provider takes is refused by the API (400 naming the limit), not
accepted and failed later: found by an i18n audit, a 1,601-character SMS reply was answered 202,
queued, refused by Twilio (error 21617) and ended as DeliveryFailed, the agent's text lost in
a failure reason. Emoji count as the providers count them (two UTF-16 units), and nothing is
ever cut (a cut could split an emoji, a flag or a letter from its accent)."""

from __future__ import annotations

from pathlib import Path

from connectors.sdk import text_limits
from events.model import ReplyRequested
from services.bus.embedded import EmbeddedNats

from .console_pages import create_customer, open_message
from .helpers import agent_system, agents_config, eventually


def test_lengths_are_counted_as_twilio_and_meta_count_them() -> None:
    assert text_limits.length("héllo") == 5
    assert text_limits.length("😀") == 2  # outside the BMP: a surrogate pair
    assert text_limits.length("🇩🇪") == 4  # a flag: two regional indicators
    assert text_limits.length("👨\u200d👩\u200d👧") == 8  # a family: three emoji, two joiners
    assert text_limits.length("e\u0301") == 2  # a letter and its combining accent


async def test_a_reply_over_the_providers_limit_is_refused_before_it_is_written(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        ava, _ = await s.issue_token("ava")
        customer, cid = await s.open()
        await eventually(lambda: s.conversation(cid, "offered"))
        assert (await s.call("POST", f"/v1/conversations/{cid}/accept", ava, {}))[0] == 200
        reply = f"/v1/conversations/{cid}/reply"

        status, body = await s.call("POST", reply, ava, {"text": "a" * 1601})
        assert status == 400, body
        assert "1601 characters" in body["error"] and "at most 1600" in body["error"], body
        # 801 emoji are 801 code points but 1,602 characters to Twilio.
        status, body = await s.call("POST", reply, ava, {"text": "😀" * 801})
        assert status == 400 and "1602 characters" in body["error"], body
        written = [e.event for e in await s.log(customer) if isinstance(e.event, ReplyRequested)]
        assert written == []  # nothing on the log, nothing queued

        status, body = await s.call("POST", reply, ava, {"text": "😀" * 800})  # exactly 1,600
        assert status == 202, body
        status, body = await s.call("POST", reply, ava, {"text": "a" * 1600})
        assert status == 202, body

        # Messenger takes 2,000 characters.
        await create_customer(s.store, "cu-psid", "social:psid-42")
        await open_message(
            s.store,
            "cu-psid",
            "cv-messenger",
            channel="social",
            contact="psid-42",
            sender="Ann",
            text="hello",
            platform="messenger",
        )
        await eventually(lambda: s.conversation("cv-messenger", "offered"))
        assert (await s.call("POST", "/v1/conversations/cv-messenger/accept", ava, {}))[0] == 200
        status, body = await s.call("POST", "/v1/conversations/cv-messenger/reply", ava, {"text": "b" * 2001})
        assert status == 400 and "Messenger takes at most 2000" in body["error"], body
        status, body = await s.call("POST", "/v1/conversations/cv-messenger/reply", ava, {"text": "b" * 2000})
        assert status == 202, body

        # Writing first: the same limit, and no customer or conversation is made.
        status, body = await s.call(
            "POST", "/v1/conversations", ava, {"address": "sms:+15557770001", "text": "c" * 1601}
        )
        assert status == 400 and "at most 1600" in body["error"], body
        status, _ = await s.call("GET", "/v1/customers?identity=sms:+15557770001")
        assert status == 404
