"""An erasure reaches the customer's words the Slack app posted in a conversation's thread, over
a real nats-server against the fake Slack: the thread posts are deleted (``chat.delete``), the
conversation's message reads ``[erased]``, also after it was resolved (its reference then
dropped), another customer's posts stay, a redelivery does nothing twice, and what is kept for
it lapses (a TTL on every key)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NotFoundError

from events.streams import ensure_streams
from events.subjects import STATE_BUCKET
from services.bus.embedded import EmbeddedNats
from services.delivery.settings import Endpoint
from services.delivery.slack_api import SlackApi
from services.delivery.slack_app import SlackApp
from services.delivery.slack_refs import ERASABLE_DAYS, Erasable, SlackRefs, erased_key
from services.delivery.slack_settings import SlackSettings
from tests.integration.test_nats_security import Secured, as_role

from .fake_slack import BOT_TOKEN, FakeSlack, Posted, fake_slack
from .helpers import AgentSystem, agent_system, eventually, holds
from .test_erasure_notices import secured  # noqa: F401 (a fixture: a nats-server with the generated roles)
from .test_slack_app import USERS, header_of, slack_config

pytestmark = pytest.mark.integration

ERASED, KEPT = "+15551230101", "+15551230202"
SLACK_USER = {agent: user for user, agent in USERS.items()}
ENDPOINT = "billing-slack"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as fake:
        yield fake


async def accepted_with_thread(
    s: AgentSystem, slack: FakeSlack, phone: str, words: list[str]
) -> tuple[str, str, Posted, str]:
    """A customer writes ``words[0]``, the agent offered it accepts in Slack, the customer writes
    the rest (each a post in the message's thread). Returns (customer, conversation, message,
    the agent's Slack user)."""
    tag = phone[-4:]
    assert await s.system.send_sms("SM" + tag * 8, phone, words[0]) == 200
    customer = await eventually(lambda: s.system.customer(phone))
    conv = await eventually(lambda: s.system.conversation_of(customer))
    offer = await eventually(header_of(slack, conv["id"], "New offer for"))
    agent = (await eventually(lambda: s.conversation(conv["id"], "offered")))["agent_id"]
    assert await slack.click(s.system.http, s.api, SLACK_USER[agent], offer, "relaydesk_accept") == 200
    message = await eventually(header_of(slack, conv["id"], "Accepted by"))
    for n, text in enumerate(words[1:]):
        assert await s.system.send_sms(f"SM{tag * 7}{n:04d}", phone, text) == 200
    await eventually(holds(lambda: len(slack.in_thread(message)) == len(words) - 1))
    return customer, conv["id"], message, SLACK_USER[agent]


async def state_keys(s: AgentSystem, cid: str) -> list[str]:
    """The conversation's keys in rd_state with a value (one purged while listed is not)."""
    kv = await s.store.js.key_value(STATE_BUCKET)
    out = []
    for key in (k for k in await kv.keys() if cid in k):
        try:
            if (await kv.get(key)).value:
                out.append(key)
        except (KeyNotFoundError, KeyDeletedError):
            continue
    return out


async def ttl_of(s: AgentSystem, key: str) -> str | None:
    try:
        msg = await s.store.js.get_last_msg(f"KV_{STATE_BUCKET}", f"$KV.{STATE_BUCKET}.{key}")
    except NotFoundError:
        return None
    return (msg.headers or {}).get("Nats-TTL")


async def seq_of(s: AgentSystem, key: str) -> int:
    return int((await s.store.js.get_last_msg(f"KV_{STATE_BUCKET}", f"$KV.{STATE_BUCKET}.{key}")).seq or 0)


def words_in(slack: FakeSlack, secrets: list[str]) -> list[str]:
    shown = " ".join(m.text + str(m.blocks) for m in slack.messages)
    return [w for w in secrets if w in shown]


async def test_the_erased_customers_thread_posts_are_deleted_after_the_conversation_was_resolved(
    tmp_path: Path, clean_nats: EmbeddedNats, slack: FakeSlack
) -> None:
    secrets = ["my invoice is wrong: card 4111 charged", "my pin is 9876", "I live at 12 Elm St", "call me on 0770 900"]
    others = ["my invoice for order 5521 is wrong", "it was 40 EUR"]
    async with agent_system(slack_config(tmp_path, clean_nats.url, slack), clean_nats) as s:
        customer, cid, message, agent = await accepted_with_thread(s, slack, ERASED, secrets)
        _, other_cid, other_message, _ = await accepted_with_thread(s, slack, KEPT, others)
        thread = slack.in_thread(message)
        # A teammate's remark in the thread: not the app's to delete (Slack would refuse).
        remark = slack.user_message("U0BRUNO", message, "looks like fraud")

        # What an erasure needs is kept for a while, each key with a TTL (rd_state's keys lapse).
        kept = await eventually(lambda: state_keys(s, cid))
        erasables = [k for k in kept if ".er." in k]
        assert len(erasables) == 1 + len(thread)
        for key in erasables:
            assert await ttl_of(s, key) == str(ERASABLE_DAYS * 86400)
        written = {key: await seq_of(s, key) for key in erasables}

        # Resolved: the message's reference is dropped (its last state), what an erasure needs is not.
        assert await slack.click(s.system.http, s.api, agent, message, "relaydesk_resolve") == 200
        await eventually(header_of(slack, cid, "Resolved"))
        await eventually(lambda: _only_erasables(s, cid))
        assert sorted(await state_keys(s, cid)) == sorted(erasables)
        for key in erasables:  # renewed at the last state: they lapse ERASABLE_DAYS from then
            assert await ttl_of(s, key) == str(ERASABLE_DAYS * 86400)
            assert await seq_of(s, key) > written[key]
        # The message no longer quotes them; its thread still does.
        assert words_in(slack, secrets) == secrets[1:]

        status, report = await s.call("DELETE", f"/v1/customers/{customer}", body={"reason": "DSR-9"})
        assert status == 200, report

        await eventually(holds(lambda: {p.ts for p in slack.deleted} == {p.ts for p in thread}))
        await eventually(holds(lambda: message.text == "[erased]"))
        assert slack.in_thread(message) == [remark]  # the teammate's remark is theirs
        assert words_in(slack, secrets) == []
        assert slack.top_level(other_cid) == [other_message]  # the other customer's: untouched
        assert len(slack.in_thread(other_message)) == len(others) - 1
        assert words_in(slack, others) == others  # still open: its message quotes the first
        assert "erased" not in other_message.text
        await eventually(lambda: _no_keys_left(s, cid))
        assert await s.deliveries("failed") == []

        # Told again (a redelivery, a standby's replay): nothing left to do, nothing called.
        app, endpoint = direct_app(s, slack), Endpoint(kind="slack", id=ENDPOINT, team="billing", channel="C0SUPPORT")
        erased = {"notice": "customer.erased", "customer_id": customer, "conversation_ids": [cid]}
        calls = list(slack.calls)
        assert (await app.send(ENDPOINT, endpoint, erased)).ok
        assert slack.calls == calls

        # Stopped after a delete, before its key went: Slack's message_not_found counts as done.
        refs = await app.refs()
        gone = thread[0]
        await refs.keep_erasable(
            Erasable(conversation_id=cid, endpoint_id=ENDPOINT, channel=gone.channel, parent_ts=message.ts, ts=gone.ts)
        )
        assert (await app.send(ENDPOINT, endpoint, erased)).ok
        assert slack.calls[len(calls) :] == [("chat.delete", 200)]
        assert await _no_keys_left(s, cid)


async def _only_erasables(s: AgentSystem, cid: str) -> bool:
    return all(".er." in k for k in await state_keys(s, cid))


async def _no_keys_left(s: AgentSystem, cid: str) -> bool:
    """Nothing is left of the conversation in rd_state but the empty erased marker (with a TTL)."""
    marker = await ttl_of(s, erased_key(cid, ENDPOINT))
    return not await state_keys(s, cid) and marker == str(ERASABLE_DAYS * 86400)


def direct_app(s: AgentSystem, slack: FakeSlack) -> SlackApp:
    settings = SlackSettings(bot_token=BOT_TOKEN, api_url=slack.api_url)
    return SlackApp(SlackApi(settings, lambda: s.system.http, max_wait=0.0), s.store.js, lambda _agent: None)


async def test_an_open_conversation_erased_loses_its_thread_and_a_notice_retried_after_posts_nothing(
    tmp_path: Path, clean_nats: EmbeddedNats, slack: FakeSlack
) -> None:
    secrets = ["my invoice is wrong: card 4111 charged", "my pin is 9876", "I live at 12 Elm St"]
    async with agent_system(slack_config(tmp_path, clean_nats.url, slack), clean_nats) as s:
        customer, cid, message, _ = await accepted_with_thread(s, slack, ERASED, secrets)
        thread = slack.in_thread(message)
        # A workspace with compliance exports refuses the first delete: that post is redrawn instead.
        refusal = {"ok": False, "error": "compliance_exports_prevent_deletion"}
        slack.script["chat.delete"] = [(200, {}, refusal)]

        # The erasure resolves the conversation first (its message's reference dropped), then erases.
        status, report = await s.call("DELETE", f"/v1/customers/{customer}", body={"reason": "DSR-10"})
        assert status == 200, report
        await eventually(holds(lambda: len(slack.deleted) == len(thread) - 1))
        await eventually(holds(lambda: message.text == "[erased]"))
        [kept] = slack.in_thread(message)
        assert kept.text == "[erased]" and {p.ts for p in slack.deleted} | {kept.ts} == {p.ts for p in thread}
        assert words_in(slack, secrets) == []
        await eventually(lambda: _no_keys_left(s, cid))

        # A customer message's notice retried after the erasure (it was backing off): not posted,
        # and a late redraw does not bring the message back.
        app, endpoint = direct_app(s, slack), Endpoint(kind="slack", id=ENDPOINT, team="billing", channel="C0SUPPORT")
        conversation = {"id": cid, "customer_id": customer, "channel": "sms"}
        late = {"notice": "message", "agent_id": "ava", "conversation": conversation, "preview": "my pin is 9876"}
        redraw = {"notice": "resolved", "agent_id": "ava", "conversation": conversation, "preview": "card 4111"}
        calls = list(slack.calls)
        assert (await app.send(ENDPOINT, endpoint, late)).ok
        assert (await app.send(ENDPOINT, endpoint, redraw)).ok
        assert slack.calls == calls and words_in(slack, secrets) == []


async def test_the_delivery_role_may_keep_renew_and_drop_what_an_erasure_needs(secured: Secured) -> None:  # noqa: F811
    """Under the permissions ``relaydesk up`` generates: the keys with a TTL, listed, purged."""
    post = Erasable(conversation_id="cv0erased02", endpoint_id="e1", channel="C1", parent_ts="1.2", ts="1.3")
    async with as_role(secured, "tool") as (tool, _):
        await ensure_streams(tool.jetstream())
    async with as_role(secured, "delivery") as (nc, client):
        js = nc.jetstream()
        refs = SlackRefs(await js.key_value(STATE_BUCKET), js=js)
        await refs.keep_erasable(post)
        await refs.mark_erased(post.conversation_id, post.endpoint_id)
        assert await refs.erasables(post.conversation_id, "e1") == [post]
        assert await refs.erased(post.conversation_id, "e1")
        await refs.forget_erasable(post)
        assert await refs.erasables(post.conversation_id, "e1") == []
        assert not client.errors
    assert [line for line in secured.violations() if "delivery" in line] == []


async def test_retention_longer_than_the_default_keeps_posts_reachable_that_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[retention] message_days`` of 90: the deployment keeps the customer's words 90 days, so
    the posts an erasure takes back stay reachable as long (the runner passed nothing: 30 days)."""
    import types

    import msgspec

    from services import runners
    from services.config import Config
    from services.delivery import service as delivery_service
    from services.delivery.slack_refs import DAY

    seen: dict[str, object] = {}

    class Built(Exception):
        pass

    def recording(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise Built

    monkeypatch.setattr(delivery_service, "DeliveryService", recording)
    config = Config()
    config.retention = msgspec.structs.replace(config.retention, message_days=90)
    with pytest.raises(Built):
        await runners.run_delivery(config, types.SimpleNamespace(store=None), asyncio.Event())  # type: ignore[arg-type]
    assert seen["message_days"] == 90
    app = SlackApp(SlackApi(SlackSettings(), None, 0.0), None, lambda agent: None, message_days=90)  # type: ignore[arg-type]
    assert app.keep_for == 90 * DAY
    assert SlackApp(SlackApi(SlackSettings(), None, 0.0), None, lambda a: None).keep_for == ERASABLE_DAYS * DAY  # type: ignore[arg-type]
