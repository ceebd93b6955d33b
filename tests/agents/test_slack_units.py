"""The Slack app's pure parts: Slack's request signature (checked against the example in
Slack's own documentation), the endpoint settings, the messages' buttons."""

from __future__ import annotations

from pathlib import Path

from services.config import load
from services.delivery import slack_blocks
from services.delivery.endpoints import settings_problems
from services.delivery.settings import DeliverySettings, Endpoint
from services.delivery.slack_settings import SlackSettings
from services.delivery.slack_signing import refusal, signature

# api.slack.com/authentication/verifying-requests-from-slack, "Walkthrough".
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TIMESTAMP = "1531420618"
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_the_signature_is_slacks_own_example() -> None:
    assert signature(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY) == DOC_SIGNATURE
    now = float(DOC_TIMESTAMP) + 10
    assert refusal(DOC_SECRET, DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, now=now) is None
    assert refusal(DOC_SECRET, DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY + b"&x=1", now=now) == "bad signature"
    assert refusal("another", DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, now=now) == "bad signature"
    stale = refusal(DOC_SECRET, DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, now=float(DOC_TIMESTAMP) + 301)
    assert stale is not None and "more than 300 s" in stale
    assert refusal(DOC_SECRET, None, DOC_SIGNATURE, DOC_BODY, now=now) is not None
    assert refusal(DOC_SECRET, "soon", DOC_SIGNATURE, DOC_BODY, now=now) is not None


def test_slack_endpoints_post_to_a_webhook_or_through_the_app() -> None:
    endpoints = (
        Endpoint(kind="slack", id="hook", agent="ava", url="https://hooks.slack.com/services/T/B/X"),
        Endpoint(kind="slack", id="team", agent="ava", channel="C0SUPPORT"),
        Endpoint(kind="slack", id="dm", agent="ava", channel="dm"),
        Endpoint(kind="slack", id="both", agent="ava", channel="C0SUPPORT", url="https://hooks.slack.com/x"),
        Endpoint(kind="slack", id="neither", agent="ava"),
    )
    problems = settings_problems(DeliverySettings(endpoints=endpoints), SlackSettings())
    assert problems == [
        "endpoint team: a slack channel needs [slack] bot_token (xoxb-…)",
        "endpoint dm: a slack channel needs [slack] bot_token (xoxb-…)",
        "endpoint dm: channel 'dm' needs [slack] users (Slack user id = agent id)",
        "endpoint both: slack takes a url (incoming webhook) or a channel (the app), not both",
        "endpoint neither: slack needs an http(s) url (incoming webhook) or a channel",
    ]
    ok = SlackSettings(bot_token="xoxb-1", users={"U1": "ava"})
    assert settings_problems(DeliverySettings(endpoints=endpoints[:3]), ok) == []
    # The app's endpoints keep their message current whatever `notices` lists; webhooks do not.
    assert endpoints[1].wants("resolved") and endpoints[1].wants("accepted")
    assert not endpoints[0].wants("resolved") and endpoints[0].wants("offer")


def test_slack_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "relaydesk.toml"
    path.write_text('[slack]\nusers = { U0123ABCD = "ava" }\n')
    config = load(path, env={"RELAYDESK_SLACK_BOT_TOKEN": "xoxb-9", "RELAYDESK_SLACK_SIGNING_SECRET": "s3"})
    assert config.slack.bot_token == "xoxb-9" and config.slack.signing_secret == "s3"
    assert config.slack.agent_for("U0123ABCD") == "ava" and config.slack.slack_user_of("ava") == "U0123ABCD"
    assert config.slack.agent_for("U0OTHER") is None


def test_the_message_offers_accept_and_decline_then_resolve_then_nothing() -> None:
    body = {
        "notice": "offer",
        "agent_id": "ava",
        "agent_name": "Ava",
        "conversation": {"id": "cv1", "channel": "sms"},
        "customer": {"id": "cu1", "contact": "+155•••0000"},
        "preview": "a <b> & c",
        "links": {"console": "http://x/console#conversation=cv1"},
    }

    def buttons(kind: str) -> list[str]:
        _, blocks = slack_blocks.conversation_message({**body, "notice": kind})
        return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"] if "value" in e]

    text, blocks = slack_blocks.conversation_message(body)
    assert text == "New offer for Ava: sms conversation cv1"
    assert "> a &lt;b&gt; &amp; c" in str(blocks)
    assert buttons("offer") == [slack_blocks.ACCEPT, slack_blocks.DECLINE]
    assert buttons("accepted") == [slack_blocks.RESOLVE]
    assert all(buttons(kind) == [] for kind in ("declined", "offer_expired", "released", "resolved"))
