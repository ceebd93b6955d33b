"""Offers delivered into agents' tools over a real nats-server: signed webhooks, Slack,
email, retries with backoff, dead letters and re-delivery."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from events.model import MessageReceived
from events.store import Append
from services.bus.embedded import EmbeddedNats, free_port
from services.delivery.pacing import MessagePacing
from services.delivery.settings import Endpoint
from services.delivery.signing import HEADER, verify
from tests.kv_gets import counting_kv_gets

from .helpers import agent_system, agents_config, eventually, holds, receiver

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0123456789"


async def test_an_offer_reaches_a_signed_webhook_and_slack(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    async with receiver() as hook, receiver() as slack:
        endpoints = (
            Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret=SECRET),
            Endpoint(kind="slack", id="billing-slack", team="billing", url=slack.url),
        )
        async with agent_system(agents_config(tmp_path, clean_nats.url, endpoints), clean_nats) as s:
            customer, cid = await s.open(text="My invoice is wrong\nI was charged twice\nplease help\nfourth line")
            await eventually(lambda: s.conversation(cid, "offered"))
            await eventually(holds(lambda: hook.ok() and slack.ok()))

            seen = hook.ok()[0]
            assert verify(SECRET, seen.headers[HEADER], seen.body)
            assert not verify("another-secret", seen.headers[HEADER], seen.body)
            t = int(seen.headers[HEADER].split(",")[0][2:])
            assert abs(time.time() - t) < 60
            body = seen.json()
            assert body["notice"] == "offer"
            assert body["agent_id"] == "ava"
            assert body["conversation"]["id"] == cid
            assert body["conversation"]["channel"] == "sms"
            assert body["customer"]["id"] == customer
            assert body["customer"]["contact"] == "+155•••0000"  # masked
            assert body["requirements"]["language"] == "en"
            assert body["preview"] == "My invoice is wrong\nI was charged twice\nplease help"
            assert body["delivery_id"] == seen.headers["X-Relaydesk-Delivery"]
            assert body["links"]["accept"].endswith(f"/console#accept={cid}")

            message = slack.ok()[0].json()
            assert cid in message["text"]
            blocks = {b["type"]: b for b in message["blocks"]}
            [with_fields] = [b for b in message["blocks"] if "fields" in b]
            fields = " ".join(f["text"] for f in with_fields["fields"])
            for expected in (
                "*Customer*",
                customer,
                "*Channel*\nsms",
                "*Tier*\nstandard",
                "*Language*\nen",
                "*Skills*\nbilling ≥1",
                "*Wait*",
            ):
                assert expected in fields
            quoted = [b for b in message["blocks"] if b["type"] == "section" and "text" in b]
            assert blocks["header"]["text"]["text"] == "New offer · sms"
            assert "> My invoice is wrong" in quoted[0]["text"]["text"]
            buttons = blocks["actions"]["elements"]
            assert buttons[0]["url"].endswith(f"#accept={cid}")

            delivered = await eventually(lambda: _by_endpoint(s, "delivered", 2))
            assert {d["endpoint_id"] for d in delivered} == {"ava-hook", "billing-slack"}
            assert all(d["attempt_count"] == 1 for d in delivered)
            # The list is read in one pass over the bucket, not a request per record (a scale
            # audit: two weeks of notices were ~100,000 round trips per listing).
            with counting_kv_gets() as asked:
                assert len(await s.deliveries()) == 2
            assert asked == []


async def _by_endpoint(s: Any, status: str, n: int) -> list[dict[str, Any]] | None:
    found = await s.deliveries(status)
    return found if len(found) >= n else None


async def test_two_500s_then_200_is_one_delivery_with_the_retries_recorded(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    async with receiver(script=[500, 500], then=200) as hook:
        endpoints = (Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret=SECRET),)
        async with agent_system(agents_config(tmp_path, clean_nats.url, endpoints), clean_nats) as s:
            _, cid = await s.open()
            [record] = await eventually(lambda: _by_endpoint(s, "delivered", 1))
            assert [a["status_code"] for a in record["attempts"]] == [500, 500, 200]
            assert [a["ok"] for a in record["attempts"]] == [False, False, True]
            assert record.get("next_attempt_at") is None  # nothing is planned for a delivered record
            assert record["conversation_id"] == cid
            assert len(hook.ok()) == 1
            assert len(hook.seen) == 3
            assert len({s.headers["X-Relaydesk-Delivery"] for s in hook.seen}) == 1
            assert await s.deliveries("failed") == []


async def test_a_receiver_that_always_fails_is_dead_lettered_then_redelivered(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    async with receiver(then=503) as hook:
        endpoints = (Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret=SECRET),)
        async with agent_system(agents_config(tmp_path, clean_nats.url, endpoints), clean_nats) as s:
            _, cid = await s.open()
            [failed] = await eventually(lambda: _by_endpoint(s, "failed", 1))
            assert failed["conversation_id"] == cid
            assert len(failed["attempts"]) == 3  # max_attempts
            assert "HTTP 503" in failed["reason"] and "after 3 attempts" in failed["reason"]
            assert len(hook.seen) == 3

            hook.then = 200
            status, body = await s.call("POST", f"/v1/deliveries/{failed['id']}/retry")
            assert status == 202, body
            [done] = await eventually(lambda: _by_endpoint(s, "delivered", 1))
            assert done["id"] == failed["id"]
            assert done["rounds"] == 2
            assert [a["status_code"] for a in done["attempts"]] == [503, 503, 503, 200]
            assert len(hook.ok()) == 1
            assert verify(SECRET, hook.ok()[0].headers[HEADER], hook.ok()[0].body)
            # Only failed deliveries are retried.
            status, body = await s.call("POST", f"/v1/deliveries/{failed['id']}/retry")
            assert status == 409, body
            status, body = await s.call("POST", "/v1/deliveries/dl-nope/retry")
            assert status == 404, body


async def test_a_receiver_refusing_with_4xx_is_dead_lettered_at_once(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    async with receiver(then=410) as hook:
        endpoints = (Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret=SECRET),)
        async with agent_system(agents_config(tmp_path, clean_nats.url, endpoints), clean_nats) as s:
            await s.open()
            [failed] = await eventually(lambda: _by_endpoint(s, "failed", 1))
            assert len(failed["attempts"]) == 1
            assert failed["reason"].startswith("HTTP 410 (a body of")  # not the body: it may quote the notice


class Sink:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


async def test_an_offer_reaches_the_agent_by_email(tmp_path: Path, clean_nats: EmbeddedNats) -> None:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        endpoints = (Endpoint(kind="email", id="ava-mail", agent="ava", address="ava@agents.example"),)
        config = agents_config(tmp_path, clean_nats.url, endpoints, smtp_host="127.0.0.1", smtp_port=port)
        async with agent_system(config, clean_nats) as s:
            _, cid = await s.open(text="where is my refund")

            async def mailed() -> bool:
                return bool(sink.messages)

            await eventually(mailed)
            envelope = sink.messages[0]
            assert envelope.rcpt_tos == ["ava@agents.example"]
            text = envelope.content.decode()
            assert f"New offer: sms conversation {cid}" in text
            assert "where is my refund" in text
            assert f"#accept={cid}" in text
            await eventually(lambda: _by_endpoint(s, "delivered", 1))
    finally:
        controller.stop()


async def test_each_notice_goes_out_once_however_fast_the_receiver_answers(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    """The watcher sees each record's creation some time after it was made: seen after its
    delivery had ended, it looked like a record left pending and was sent again. Most likely
    at a start, when the notices waiting are created while the watcher is being set up."""
    async with receiver() as hook, receiver(then=410) as refusing:
        endpoints = (
            Endpoint(kind="webhook", id="ava-hook", agent="ava", url=hook.url, secret=SECRET, notices=("message",)),
            Endpoint(kind="webhook", id="ava-gone", agent="ava", url=refusing.url, secret=SECRET, notices=("message",)),
        )
        config = agents_config(tmp_path, clean_nats.url, endpoints)
        async with agent_system(config, clean_nats, services=("router", "api")) as s:
            customer, cid = await s.open(channel="email")  # e-mail is assigned at once
            await eventually(lambda: s.conversation(cid, "assigned"))
            messages = 40
            for n in range(messages):
                message = MessageReceived(
                    at=datetime.now(UTC),
                    customer_id=customer,
                    conversation_id=cid,
                    channel="email",
                    message_id=f"m{n}-{cid}",
                    provider_message_id=f"p{n}-{cid}",
                    text=f"and another thing ({n})",
                )
                await s.store.append(Append(message))
            delivery = s.delivery_service(config)
            # Each message pings here: a notice per message is what this test counts, not pacing.
            delivery.facts.pacing = MessagePacing(burst=messages)
            stop = asyncio.Event()
            running = asyncio.create_task(delivery.run(stop))
            try:
                await eventually(lambda: _by_endpoint(s, "delivered", messages))
                # The watcher reads the bucket in order: once it has picked up an operator's
                # retry made now, it has seen every creation before it.
                [first_failed, *_] = await eventually(lambda: _by_endpoint(s, "failed", messages))
                status, body = await s.call("POST", f"/v1/deliveries/{first_failed['id']}/retry")
                assert status == 202, body
                await eventually(holds(lambda: len(refusing.seen) >= messages + 1))
                await eventually(lambda: _by_endpoint(s, "failed", messages))  # refused again
            finally:
                stop.set()
                await asyncio.wait_for(running, 10)
            ids = [seen.headers["X-Relaydesk-Delivery"] for seen in hook.seen]
            assert len(ids) == messages and len(set(ids)) == messages
            assert len(refusing.seen) == messages + 1
            assert all(d["attempt_count"] == 1 for d in await s.deliveries("delivered"))


async def test_an_offer_answered_while_its_endpoint_is_down_is_not_tried_again(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an outage audit: a notice retried through an endpoint's outage went out when
    the endpoint came back, though the offer had been accepted (or had expired) long before;
    the log's answer was looked at only when the notice was made. Now each retry asks first,
    and the record ends ``superseded``, not sent, not counted as a failure."""
    monkeypatch.setattr("services.delivery.attempts.backoff", lambda *_args, **_kw: 2.0)
    async with receiver(then=503) as hook:
        endpoints = tuple(
            Endpoint(kind="webhook", id=f"{agent}-hook", agent=agent, url=hook.url, secret=SECRET)
            for agent in ("ava", "bruno")
        )
        async with agent_system(agents_config(tmp_path, clean_nats.url, endpoints), clean_nats) as s:
            _, cid = await s.open()
            conv = await eventually(lambda: s.conversation(cid, "offered"))
            await eventually(holds(lambda: hook.seen))  # its first try failed; the next in 2 s
            offer_delivery = hook.seen[0].headers["X-Relaydesk-Delivery"]
            token, _ = await s.issue_token(conv["agent_id"])
            status, body = await s.call("POST", f"/v1/conversations/{cid}/accept", token)
            assert status == 200, body

            [superseded] = await eventually(lambda: _by_endpoint(s, "superseded", 1))
            assert superseded["id"] == offer_delivery
            assert superseded["reason"] == "the offer no longer stands: the conversation is assigned now"
            assert [h.headers["X-Relaydesk-Delivery"] for h in hook.seen].count(offer_delivery) == 1
            assert offer_delivery not in {d["id"] for d in await s.deliveries("failed")}
