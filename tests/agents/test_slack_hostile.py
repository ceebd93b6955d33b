"""The Slack app's request URLs against a hostile client (a security audit's reproductions): a
body that trickles in is answered 408, not held for as long as the client likes (these routes
read the body before anything proves who sends it); a reply in a thread also sent to the
channel answers the customer.

Over a real nats-server and a fake Slack (tests/agents/fake_slack.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.sdk import http as connector_http
from events.model import ReplyRequested
from services.bus.embedded import EmbeddedNats
from tests.trickle import answer_to_trickling_body

from .fake_slack import BOT_ID, fake_slack
from .helpers import agent_system, eventually
from .test_slack_app import PHONE, events_of, header_of, slack_config

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", ["/slack/events", "/slack/interactions"])
async def test_a_slack_request_whose_body_trickles_in_is_408_not_held_for_ever(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setattr(connector_http, "BODY_TIMEOUT", 0.5)
    async with fake_slack() as slack:
        config = slack_config(tmp_path, clean_nats.url, slack)
        async with agent_system(config, clean_nats, services=("api",)):
            head = await answer_to_trickling_body(
                f"http://{config.api.host}:{config.api.port}",
                path,
                content_type="application/json",
                start=b'{"t',
                headers="X-Slack-Request-Timestamp: 1\r\nX-Slack-Signature: v0=00\r\n",
            )
            assert head.startswith(b"HTTP/1.1 408 "), head


async def test_a_thread_reply_also_sent_to_the_channel_reaches_the_customer(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    """Slack gives a reply in a thread that is also sent to the channel the subtype
    ``thread_broadcast``: it was dropped with the edits and joins, and the agent believed the
    customer had her answer. A bot's broadcast is still nobody's reply."""
    async with fake_slack() as slack:
        config = slack_config(tmp_path, clean_nats.url, slack)
        config.connectors["sms"]["outbound"] = False  # replies stay on rd.out.sms
        async with agent_system(config, clean_nats) as s:
            http, api = s.system.http, s.api
            assert await s.system.send_sms("SM" + "b" * 32, PHONE, "my invoice is wrong, I was charged twice") == 200
            customer = await eventually(lambda: s.system.customer(PHONE))
            conv = await eventually(lambda: s.system.conversation_of(customer))
            cid = conv["id"]
            offer = await eventually(header_of(slack, cid, "New offer for Ava"))
            assert await slack.click(http, api, "U0AVA", offer, "relaydesk_accept") == 200
            accepted = await eventually(header_of(slack, cid, "Accepted by Ava"))
            bot = {"subtype": "thread_broadcast", "bot_id": BOT_ID, "user": "U0AVA", "text": "not a reply"}
            for extra in (bot, {"subtype": "thread_broadcast", "text": "On its way, sorry!"}):
                event = {
                    "type": "message",
                    "channel": accepted.channel,
                    "user": "U0AVA",
                    "ts": f"17000000{len(extra)}.000300",
                    "thread_ts": accepted.ts,
                    **extra,
                }
                assert (await slack.event(http, api, event))[0] == 200

            async def replies() -> list[ReplyRequested]:
                return await events_of(s, customer, ReplyRequested)

            [reply] = await eventually(replies)
            assert (reply.text, reply.agent_id) == ("On its way, sorry!", "ava")
