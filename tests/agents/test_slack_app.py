"""Slack, interactive, over a real nats-server against a fake Slack (tests/agents/fake_slack.py):
an SMS becomes an offer message with Accept / Decline buttons, the agent accepts in Slack,
answers in the message's thread (the customer gets an SMS), and resolves with a button; the
message is redrawn in place at each step. Requests not signed by Slack are refused."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec
import pytest
from aiohttp import web

from events.model import ConversationResolved, OfferAccepted, OfferDeclined, ReplyRequested
from services.bus.auth import RoleCredentials
from services.bus.embedded import EmbeddedNats, free_port
from services.config import Config
from services.delivery.settings import Endpoint
from services.delivery.slack_settings import SlackSettings
from services.delivery.slack_signing import headers as slack_headers
from services.up import Started, connector_channels, enabled_connectors, serve_all
from tests.integration.fake_twilio import FakeTwilio, with_fake_twilio
from tests.integration.system import API_TOKEN, System

from .fake_slack import BOT_ID, BOT_TOKEN, SIGNING_SECRET, FakeSlack, Posted, fake_slack
from .helpers import AgentSystem, agent_system, agents_config, eventually, holds

pytestmark = pytest.mark.integration

USERS = {"U0AVA": "ava", "U0BRUNO": "bruno"}
PHONE = "+15551230001"


@pytest.fixture
async def twilio() -> AsyncIterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", fake.create)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as fake:
        yield fake


def slack_config(
    tmp_path: Path,
    nats_url: str,
    slack: FakeSlack,
    channel: str = "C0SUPPORT",
    delivery: dict[str, Any] | None = None,
    **router: Any,
) -> Config:
    endpoints = (Endpoint(kind="slack", id="billing-slack", team="billing", channel=channel),)
    config = agents_config(tmp_path, nats_url, endpoints, **(delivery or {}))
    config.slack = SlackSettings(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, users=USERS, api_url=slack.api_url)
    if router:
        config.router = msgspec.structs.replace(config.router, **router)
    return config


def header_of(slack: FakeSlack, cid: str, starts: str) -> Any:
    async def probe() -> Posted | None:
        found = slack.top_level(cid)
        return found[0] if found and found[0].header().startswith(starts) else None

    return probe


async def events_of(s: AgentSystem, customer_id: str, kind: type) -> list[Any]:
    return [e.event for e in await s.log(customer_id) if isinstance(e.event, kind)]


async def test_offer_accept_reply_in_thread_and_resolve_from_slack(
    tmp_path: Path, clean_nats: EmbeddedNats, slack: FakeSlack, twilio: tuple[FakeTwilio, str]
) -> None:
    fake_twilio, twilio_url = twilio
    config = slack_config(tmp_path, clean_nats.url, slack)
    with_fake_twilio(config, twilio_url)
    async with agent_system(config, clean_nats) as s:
        http, api = s.system.http, s.api
        assert await s.system.send_sms("SM" + "e" * 32, PHONE, "my invoice is wrong\nI was charged twice") == 200
        customer = await eventually(lambda: s.system.customer(PHONE))
        conv = await eventually(lambda: s.system.conversation_of(customer))
        cid = conv["id"]
        assert conv["status"] == "offered" and conv["agent_id"] == "ava"

        # The offer, posted with the bot token to the channel, with buttons carrying the conversation.
        offer = await eventually(header_of(slack, cid, "New offer for Ava"))
        assert offer.channel == "C0SUPPORT"
        as_offered = copy.deepcopy(offer)  # the fake redraws `offer` in place; Slack clients may lag
        assert {a: b["value"] for a, b in offer.buttons().items()} == {
            "relaydesk_accept": cid,
            "relaydesk_decline": cid,
        }
        assert "> my invoice is wrong" in str(offer.blocks)
        assert PHONE not in str(offer.blocks)  # the address is masked

        # Not signed by Slack: refused, nothing changes.
        assert await slack.click(http, api, "U0AVA", offer, "relaydesk_accept", secret="not-the-secret") == 401
        stale = int(time.time()) - 6 * 60
        assert await slack.click(http, api, "U0AVA", offer, "relaydesk_accept", at=stale) == 401
        # A Slack user who is no agent, and an agent pressing another agent's offer: told why, alone.
        assert await slack.click(http, api, "U0STRANGER", offer, "relaydesk_accept") == 200
        assert await slack.click(http, api, "U0BRUNO", offer, "relaydesk_accept") == 200
        await eventually(holds(lambda: slack.ephemerals_for("U0STRANGER") and slack.ephemerals_for("U0BRUNO")))
        assert "not linked to a Relaydesk agent" in slack.ephemerals_for("U0STRANGER")[0]
        assert "not offered or assigned to you" in slack.ephemerals_for("U0BRUNO")[0]
        assert (await s.conversation(cid))["status"] == "offered"  # type: ignore[index]
        assert await events_of(s, customer, OfferAccepted) == []

        # Ava accepts: assigned, the message says so and now offers Resolve.
        assert await slack.click(http, api, "U0AVA", offer, "relaydesk_accept", action_ts="1700000000.000100") == 200
        assert (await s.conversation(cid, "assigned"))["agent_id"] == "ava"  # type: ignore[index]
        accepted = await eventually(header_of(slack, cid, "Accepted by Ava"))
        assert set(accepted.buttons()) == {"relaydesk_resolve"}
        # The same click again (Slack or a double click): nothing more.
        assert (
            await slack.click(http, api, "U0AVA", as_offered, "relaydesk_accept", action_ts="1700000000.000100") == 200
        )
        [accept] = await events_of(s, customer, OfferAccepted)
        assert accept.actor == "agent:ava"

        # Ava answers in the thread: the customer gets an SMS; Slack's retry of that event does nothing.
        status, _ = await slack.thread_reply(http, api, "U0AVA", accepted, "Sorry &amp; refunded", event_id="Ev0001")
        assert status == 200
        await eventually(holds(lambda: fake_twilio.messages))
        status, _ = await slack.thread_reply(
            http, api, "U0AVA", accepted, "Sorry &amp; refunded", event_id="Ev0001", retry_num=1
        )
        assert status == 200
        # Bots (our own posts) and a teammate chatting in the thread do not answer the customer.
        bot_event = {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": BOT_ID,
            "channel": accepted.channel,
            "text": "New customer message",
            "ts": "1700000001.000200",
            "thread_ts": accepted.ts,
        }
        assert (await slack.event(http, api, bot_event))[0] == 200
        assert (await slack.thread_reply(http, api, "U0BRUNO", accepted, "looks like a refund"))[0] == 200
        [reply] = await events_of(s, customer, ReplyRequested)
        assert reply.actor == "agent:ava" and reply.agent_id == "ava" and reply.text == "Sorry & refunded"
        assert fake_twilio.messages == [{"To": PHONE, "From": "+15557654321", "Body": "Sorry & refunded"}]

        # The customer writes again: it shows in the thread, where Ava reads it.
        assert await s.system.send_sms("SM" + "f" * 32, PHONE, "thanks, when will it arrive?") == 200
        await eventually(holds(lambda: any("when will it arrive" in str(m.blocks) for m in slack.in_thread(accepted))))

        # Resolve from Slack: resolved, and the message says so, without buttons.
        assert await slack.click(http, api, "U0AVA", accepted, "relaydesk_resolve") == 200
        await eventually(lambda: s.conversation(cid, "resolved"))
        resolved = await eventually(header_of(slack, cid, "Resolved"))
        assert resolved.buttons() == {}
        [done] = await events_of(s, customer, ConversationResolved)
        assert done.actor == "agent:ava"
        assert len(slack.top_level(cid)) == 1  # one message, redrawn in place
        assert [d["status"] for d in await s.deliveries("failed")] == []


async def test_events_url_verification_and_signature(
    tmp_path: Path, clean_nats: EmbeddedNats, slack: FakeSlack
) -> None:
    async with agent_system(slack_config(tmp_path, clean_nats.url, slack), clean_nats) as s:
        challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        body = msgspec.json.encode({"token": "x", "challenge": challenge, "type": "url_verification"})
        status, answer = await slack.send_event_body(s.system.http, s.api, body)
        assert (status, answer) == (200, {"challenge": challenge})
        status, answer = await slack.send_event_body(s.system.http, s.api, body, secret="wrong")
        assert status == 401 and "signature" in answer["error"]
        # Well past the 300 s tolerance (its edge is unit-tested with a fixed clock): int() drops
        # up to a second and the request takes its time on a loaded machine, so +301 was
        # sometimes 300 s or less by the app's clock, and let in.
        status, answer = await slack.send_event_body(s.system.http, s.api, body, at=int(time.time()) + 360)
        assert status == 401 and "more than 300 s" in answer["error"]
        async with s.system.http.post(s.api + "/slack/events", data=body) as r:
            assert r.status == 401


BAD_CLICKS: list[dict[str, Any]] = [
    {"user": "U0AVA"},
    {"channel": "C0SUPPORT"},
    {"container": ["C0SUPPORT"]},
    {"actions": {"action_id": "accept"}},
    {"actions": ["accept"]},
    {"actions": 3},
    {"actions": [{"action_id": {"x": 1}, "value": "cv_1"}]},
]
BAD_THREADS: list[dict[str, Any]] = [
    {"channel": "C0 SUPPORT"},
    {"channel": "C0*"},
    {"channel": ">"},
    {"channel": {"id": "C0SUPPORT"}},
    {"thread_ts": "1700000000 .1"},
    {"thread_ts": "1700000000.*"},
    {"thread_ts": ">"},
    {"thread_ts": {"ts": "1"}},
    {"thread_ts": "١٧٠٠٠٠٠٠٠٠.1"},
]


async def test_signed_payloads_of_the_wrong_shape_are_400_never_5xx(
    tmp_path: Path, clean_nats: EmbeddedNats, slack: FakeSlack
) -> None:
    async with agent_system(slack_config(tmp_path, clean_nats.url, slack), clean_nats) as s:
        http = s.system.http

        async def interaction(payload: str) -> tuple[int, Any]:
            body = urlencode({"payload": payload}).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded", **slack_headers(SIGNING_SECRET, body)}
            async with http.post(s.api + "/slack/interactions", data=body, headers=headers) as r:
                return r.status, await r.json(content_type=None)

        for bad in BAD_CLICKS:
            status, answer = await interaction(msgspec.json.encode({"type": "block_actions", **bad}).decode())
            assert status == 400, (bad, answer)
        assert (await interaction("[" * 5000 + "]" * 5000))[0] == 400
        deep = b'{"type":"event_callback","event":' + b"[" * 5000 + b"]" * 5000 + b"}"
        assert (await slack.send_event_body(http, s.api, deep))[0] == 400
        assert (await slack.send_event_body(http, s.api, b"[" * 5000 + b"]" * 5000))[0] == 400
        for bad in BAD_THREADS:
            event = {
                "type": "message",
                "channel": "C0SUPPORT",
                "user": "U0AVA",
                "text": "hi",
                "ts": "1700000001.000200",
            }
            event |= {"thread_ts": "1700000000.000100", **bad}
            status, answer = await slack.event(http, s.api, event)
            assert status == 400, (bad, answer)
        assert slack.ephemerals == []


async def test_decline_expiry_and_transfer_redraw_the_dm_and_a_reply_before_accepting_is_refused(
    tmp_path: Path, clean_nats: EmbeddedNats, slack: FakeSlack
) -> None:
    config = slack_config(tmp_path, clean_nats.url, slack, channel="dm", offer_timeout_seconds=6.0)
    async with agent_system(config, clean_nats) as s:
        http, api = s.system.http, s.api
        customer, cid = await s.open(text="refund please")
        offer = await eventually(header_of(slack, cid, "New offer for Ava"))
        assert offer.channel == "D0AVA"  # Ava's DM with the app

        # Replying in the thread before accepting: refused, told in the thread.
        assert (await slack.thread_reply(http, api, "U0AVA", offer, "hello?"))[0] == 200
        await eventually(holds(lambda: slack.ephemerals_for("U0AVA")))
        assert "accept it first" in slack.ephemerals_for("U0AVA")[0]
        assert await events_of(s, customer, ReplyRequested) == []

        assert await slack.click(http, api, "U0AVA", offer, "relaydesk_decline") == 200
        declined = await eventually(header_of(slack, cid, "Declined by Ava"))
        assert declined.buttons() == {}
        [decline] = await events_of(s, customer, OfferDeclined)
        assert decline.actor == "agent:ava"

        # An offer nobody answers expires, and its message says so.
        _, second = await s.open(text="another invoice question")
        await eventually(header_of(slack, second, "New offer for Ava"))
        expired = await eventually(header_of(slack, second, "Expired"), timeout=20)
        assert expired.buttons() == {}

        # Accepted in the console, then transferred to Bruno: Ava's message says it moved on,
        # Bruno gets the offer in his own DM.
        _, third = await s.open(text="third question")
        await eventually(header_of(slack, third, "New offer for Ava"))
        status, body = await s.call("POST", f"/v1/conversations/{third}/accept", body={})
        assert status == 200, body
        await eventually(header_of(slack, third, "Accepted by Ava"))
        status, body = await s.call("POST", f"/v1/conversations/{third}/transfer", body={"to_agent": "bruno"})
        assert status == 200, body
        moved = await eventually(header_of(slack, third, "Moved on from Ava"))
        assert moved.buttons() == {} and moved.channel == "D0AVA"
        await eventually(holds(lambda: any(m.channel == "D0BRUNO" for m in slack.top_level(third))))


async def test_slack_rate_limits_are_waited_out_and_a_bad_token_is_dead_lettered(
    tmp_path: Path, clean_nats: EmbeddedNats, slack: FakeSlack
) -> None:
    slack.script["chat.postMessage"] = [
        (429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}),
        (200, {}, {"ok": False, "error": "invalid_auth"}),
    ]
    # A Retry-After is waited out up to [delivery] backoff_max.
    config = slack_config(tmp_path, clean_nats.url, slack, delivery={"backoff_max": 5.0})
    async with agent_system(config, clean_nats) as s:
        started = time.monotonic()
        _, first = await s.open()
        [failed] = await eventually(lambda: _records(s, "failed"))
        assert failed["conversation_id"] == first
        assert [a["status_code"] for a in failed["attempts"]] == [429, 200]
        assert "invalid_auth" in failed["reason"]
        assert time.monotonic() - started >= 1.0  # Retry-After was honoured
        # Later offers go out once Slack answers again.
        _, second = await s.open()
        await eventually(header_of(slack, second, "New offer"))


async def _records(s: AgentSystem, status: str) -> list[dict[str, Any]] | None:
    found = await s.deliveries(status)
    return found or None


async def test_the_slack_app_needs_no_nats_permission_beyond_the_services_own_roles(
    tmp_path: Path, slack: FakeSlack, twilio: tuple[FakeTwilio, str]
) -> None:
    """Delivery keeps its message references under its own keys of rd_state, the API reads
    them and claims Slack retries in rd_idempotency: no permission violation in the server's log."""
    fake_twilio, twilio_url = twilio
    data_dir = tmp_path / "data"
    config = slack_config(tmp_path, "nats://127.0.0.1:1", slack)
    config.data.dir = str(data_dir)
    with_fake_twilio(config, twilio_url)
    credentials = RoleCredentials.ensure(data_dir, connector_channels(enabled_connectors(config)))
    server = EmbeddedNats(store_dir=data_dir / "nats", config_file=credentials.write_server_config())
    server.start()
    config.nats.url = server.url
    stop = asyncio.Event()
    started: list[Started] = []
    task = asyncio.create_task(serve_all(config, server.url, API_TOKEN, stop, started.append, credentials=credentials))
    try:
        await eventually(holds(lambda: started or task.done()), timeout=30)
        assert not task.done(), task.result()
        sms_url = started[0].connector_urls["sms"][0].rstrip("/") + "/twilio/sms"
        async with aiohttp.ClientSession() as http:
            system = System(config, f"http://{config.api.host}:{config.api.port}", sms_url, http, server)
            api = system.api
            assert await system.send_sms("SM" + "9" * 32, PHONE, "my invoice is wrong") == 200
            customer = await eventually(lambda: system.customer(PHONE), timeout=20)
            cid = (await eventually(lambda: system.conversation_of(customer)))["id"]
            offer = await eventually(header_of(slack, cid, "New offer for Ava"), timeout=20)
            assert await slack.click(http, api, "U0AVA", offer, "relaydesk_accept") == 200
            accepted = await eventually(header_of(slack, cid, "Accepted by Ava"))
            assert (await slack.thread_reply(http, api, "U0AVA", accepted, "On its way", event_id="Ev9"))[0] == 200
            await eventually(holds(lambda: fake_twilio.messages), timeout=20)
            assert await slack.click(http, api, "U0AVA", accepted, "relaydesk_resolve") == 200
            await eventually(header_of(slack, cid, "Resolved"))
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 30)
        server.stop()
    assert code == 0
    log = (server.store_dir / "nats-server.log").read_text(errors="replace")
    assert [line for line in log.splitlines() if "Violation" in line] == []


async def test_a_thread_reply_too_long_for_the_channel_is_refused_and_the_agent_told_in_the_thread(
    tmp_path: Path, clean_nats: EmbeddedNats, slack: FakeSlack
) -> None:
    """An SMS reply over Twilio's 1,600 characters is refused before the log (260b7d3): written in
    a Slack thread, the refusal was an API error raised out of the event handler, so Slack got
    an error for the event (and sent it again) and Ava was told nothing: her words went nowhere."""
    config = slack_config(tmp_path, clean_nats.url, slack)
    async with agent_system(config, clean_nats) as s:
        http, api = s.system.http, s.api
        customer, cid = await s.open(text="refund please")
        offer = await eventually(header_of(slack, cid, "New offer for Ava"))
        assert await slack.click(http, api, "U0AVA", offer, "relaydesk_accept") == 200
        accepted = await eventually(header_of(slack, cid, "Accepted by Ava"))

        status, _ = await slack.thread_reply(http, api, "U0AVA", accepted, "a" * 1601, event_id="Ev0long")
        assert status == 200  # answered: Slack does not send the event again
        await eventually(holds(lambda: slack.ephemerals_for("U0AVA")))
        [told] = slack.ephemerals_for("U0AVA")
        assert "1601 characters" in told and "1600" in told
        assert await events_of(s, customer, ReplyRequested) == []

        # A reply that fits goes out as usual.
        assert (await slack.thread_reply(http, api, "U0AVA", accepted, "a" * 1600, event_id="Ev0fits"))[0] == 200
        [reply] = await eventually(lambda: events_of(s, customer, ReplyRequested))
        assert len(reply.text) == 1600
