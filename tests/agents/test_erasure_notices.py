"""An erasure reaches the copies Relaydesk's notices left in agents' tools, over a real
nats-server: every webhook endpoint gets a signed ``customer.erased`` notice (ids only), the
Slack app's messages still referenced are redrawn ``[erased]``, and neither holds the erasure up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from events import subjects
from events.model import CustomerErased
from events.store import Append, StoredEvent
from events.streams import ensure_streams
from events.subjects import STATE_BUCKET
from services.bootstrap import event_store
from services.bus.embedded import EmbeddedNats
from services.delivery import erasure
from services.delivery.settings import Endpoint
from services.delivery.signing import verify
from services.delivery.slack_refs import MessageRef, SlackRefs
from services.metrics import ERASURE_NOTICES
from tests.integration.system import open_conversation
from tests.integration.test_nats_security import Secured, as_role, secured  # noqa: F401 (a fixture: a nats-server with the generated roles)

from .fake_slack import FakeSlack, fake_slack
from .helpers import agent_system, agents_config, eventually, holds, receiver
from .test_slack_app import header_of, slack_config

pytestmark = pytest.mark.integration

SECRET = "whsec_erasure_test"
PHONE = "+15557770001"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as fake:
        yield fake


def counted(kind: str, outcome: str) -> float:
    return float(ERASURE_NOTICES.labels(kind=kind, outcome=outcome)._value.get())


async def test_every_webhook_hears_of_an_erasure_signed_with_ids_only_and_a_failure_is_said(
    tmp_path: Path, clean_nats: EmbeddedNats
) -> None:
    async with receiver() as ava_hook, receiver() as bruno_hook, receiver(then=503) as broken:
        endpoints = (
            Endpoint(kind="webhook", id="ava-hook", agent="ava", url=ava_hook.url, secret=SECRET),
            # Never told of this customer (ava is offered it): still told of the erasure.
            Endpoint(kind="webhook", id="bruno-hook", agent="bruno", url=bruno_hook.url, secret=SECRET),
            Endpoint(
                kind="webhook", id="broken-hook", agent="bruno", url=broken.url, secret=SECRET, notices=("offer",)
            ),
        )
        config = agents_config(tmp_path, clean_nats.url, endpoints)
        delivered, failed = counted("webhook", "delivered"), counted("webhook", "failed")
        async with agent_system(config, clean_nats) as s:
            assert await s.system.send_sms("SM" + "a" * 32, PHONE, "my invoice is wrong: 4111 charged") == 200
            customer = await eventually(lambda: s.system.customer(PHONE))
            cid = (await eventually(lambda: s.system.conversation_of(customer)))["id"]
            await s.offered_to(cid, "ava")
            await eventually(holds(lambda: [x for x in ava_hook.ok() if x.json()["notice"] == "offer"]))

            with structlog.testing.capture_logs() as logs:
                status, report = await s.call("DELETE", f"/v1/customers/{customer}", body={"reason": "DSR-7"})
                # The erasure answered while the broken endpoint still refuses (it never waits on tools).
                assert status == 200, report

                def erased(hook: Any) -> list[Any]:
                    return [x for x in hook.ok() if x.json()["notice"] == "customer.erased"]

                [to_ava] = await eventually(holds(lambda: erased(ava_hook)))
                [to_bruno] = await eventually(holds(lambda: erased(bruno_hook)))
                await eventually(holds(lambda: counted("webhook", "failed") > failed))

            body = to_ava.json()
            assert body["customer_id"] == customer and body["conversation_ids"] == [cid]
            assert body["merged_ids"] == [] and body["delivery_id"] == to_ava.headers["X-Relaydesk-Delivery"]
            assert to_ava.headers["X-Relaydesk-Notice"] == "customer.erased"
            assert verify(SECRET, to_ava.headers["X-Relaydesk-Signature"], to_ava.body)
            for sent in (to_ava, to_bruno):
                assert b"4111" not in sent.body and PHONE[1:].encode() not in sent.body and b"preview" not in sent.body
            assert counted("webhook", "delivered") >= delivered + 2

            [said] = [e for e in logs if e["event"] == "delivery.erasure_notice_failed"]
            assert said["endpoint_id"] == "broken-hook" and said["customer_id"] == customer
            [record] = [d for d in await s.deliveries("failed") if d["endpoint_id"] == "broken-hook"]
            assert record["notice"] == "customer.erased" and "HTTP 503" in record["reason"]


async def test_the_slack_apps_messages_still_referenced_read_erased(
    tmp_path: Path, clean_nats: EmbeddedNats, slack: FakeSlack
) -> None:
    async with agent_system(slack_config(tmp_path, clean_nats.url, slack), clean_nats) as s:
        customer, cid = await s.open(text="my card 4111 is stolen")
        offer = await eventually(header_of(slack, cid, "New offer for Ava"))
        assert "4111" in str(offer.blocks)
        kv = await s.store.js.key_value(STATE_BUCKET)
        assert [k for k in await kv.keys() if cid in k]  # the offer's reference, held while it stands

        # The erasure's last step, as the log holds it. Its earlier steps' notice (the conversation
        # resolved as erased) redraws a message too, but one it could not redraw (Slack was down
        # and the resolve notice dead-lettered) keeps its reference, and the customer's words.
        # Seen two hours late (delivery was down): past max_age_seconds, told all the same.
        at = datetime.now(UTC) - timedelta(hours=2)
        await s.store.append(Append(CustomerErased(at=at, customer_id=customer, reason="DSR-8", actor="operator")))

        await eventually(holds(lambda: offer.text == "[erased]"))
        assert "4111" not in str(offer.blocks) and "+1555" not in str(offer.blocks)
        assert [m.ts for m in slack.messages] == [offer.ts]  # redrawn in place, nothing posted

        async def held(key: str) -> bool:
            try:
                return bool((await kv.get(key)).value)
            except (KeyNotFoundError, KeyDeletedError):  # purged between keys() and get()
                return False

        async def forgotten() -> bool:
            return not [k for k in await kv.keys() if cid in k and await held(k)]

        await eventually(forgotten)
        [record] = [d for d in await s.deliveries("delivered") if d["notice"] == "customer.erased"]
        assert record["kind"] == "slack" and msgspec.json.encode(record).count(b"4111") == 0


async def test_the_delivery_role_may_find_what_an_erasure_notice_needs(secured: Secured) -> None:  # noqa: F811
    """Under the permissions ``relaydesk up`` generates: the conversations of the erased family
    (the log's subjects) and the Slack references of each (a watch on ``rd_state``)."""
    customer, cid = "cu0erased01", "cv0erased01"
    ref = MessageRef(
        conversation_id=cid, customer_id=customer, agent_id="ava", endpoint_id="e1", channel="C1", ts="1.2"
    )
    async with as_role(secured, "tool") as (tool, _):
        await ensure_streams(tool.jetstream())
        await open_conversation(event_store(tool), customer, cid)
        await SlackRefs(await tool.jetstream().key_value(STATE_BUCKET)).save(ref)
    async with as_role(secured, "delivery") as (nc, client):
        erased = CustomerErased(at=datetime.now(UTC), customer_id=customer)
        told = erasure.notice(StoredEvent(seq=9, subject=subjects.customer_scope(customer), event=erased))
        assert told is not None
        await erasure.with_conversations(nc.jetstream(), told)
        assert told.body["conversation_ids"] == [cid]
        refs = SlackRefs(await nc.jetstream().key_value(STATE_BUCKET))
        assert await refs.of_conversation_anyone(cid, "e1") == [ref]
        await refs.forget(ref)
        assert await refs.of_conversation_anyone(cid, "e1") == []
        assert not client.errors
    assert [line for line in secured.violations() if "delivery" in line] == []
