"""Keys named after a reply or a Slack message leave nothing in ``rd_state`` for good: a
removed Slack reference's marker lapses, and a sent mail's entry lapses once no bounce of it
is to be expected (each was one message more per notice or reply, for as long as the
deployment ran). A bucket that refuses per-message TTLs still works as before."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StreamConfig
from nats.js.errors import NotFoundError

from connectors.email import bounces
from connectors.email.bounces import SentReplies
from events import kv_expiry, subjects
from events.model import DeliverReply
from events.stream_setup import ensure_store
from events.stream_specs import kv_spec
from services.delivery import slack_refs
from services.delivery.slack_refs import MessageRef, SlackRefs, conversation_key, thread_key
from tests.integration.system import eventually

pytestmark = pytest.mark.integration

STREAM = f"KV_{subjects.STATE_BUCKET}"


async def messages_on(nc: NATS, stream: str, subject: str) -> int:
    """Messages ``stream`` holds on ``subject`` (a key's value or marker): 0 or 1."""
    try:
        await nc.jetstream().get_last_msg(stream, subject)
    except NotFoundError:
        return 0
    return 1


def ref_of(uid: str) -> MessageRef:
    return MessageRef(
        conversation_id=f"cv{uid}",
        customer_id="cu1",
        agent_id="ava",
        endpoint_id="ep",
        channel="C1",
        ts=f"17.{uid[:6]}",
    )


async def test_a_forgotten_slack_reference_leaves_nothing(nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slack_refs, "MARKER_TTL", 1.0, raising=False)
    refs = SlackRefs(await nc.jetstream().key_value(subjects.STATE_BUCKET))
    ref = ref_of(uid)
    await refs.save(ref)
    assert await refs.of_conversation(ref.conversation_id, "ep", "ava") == ref
    await refs.forget(ref)
    assert await refs.of_conversation(ref.conversation_id, "ep", "ava") is None
    assert await refs.of_thread(ref.channel, ref.ts) is None
    keys = [conversation_key(ref.conversation_id, "ep", "ava"), thread_key(ref.channel, ref.ts)]

    async def gone() -> bool:
        return all([await messages_on(nc, STREAM, f"$KV.{subjects.STATE_BUCKET}.{key}") == 0 for key in keys])

    await eventually(gone, timeout=10)


async def test_a_sent_mails_entry_lapses(nc: NATS, uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounces, "SENT_KEPT", 1.0, raising=False)
    sent = SentReplies(nc.jetstream(), timeout=5)
    reply = DeliverReply(
        conversation_id="cv1", customer_id="cu1", channel="email", reply_id=f"rp{uid}", contact="a@b.c", text="t"
    )
    await sent.remember(reply, f"<rd.{uid}@example.com>", datetime.now(UTC), to="a@b.c")
    found = await sent.lookup(uid)
    assert found is not None and found.reply_id == reply.reply_id

    async def gone() -> bool:
        return await messages_on(nc, STREAM, f"$KV.{subjects.STATE_BUCKET}.{bounces.sent_key(uid)}") == 0

    await eventually(gone, timeout=10)
    assert await sent.lookup(uid) is None


async def test_a_bucket_without_message_ttls_keeps_markers_as_before(
    nc: NATS, uid: str, log_lines: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kv_expiry, "_said", set())  # said once per bucket and process
    bucket = f"t{uid}"
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name=f"KV_{bucket}", subjects=[f"$KV.{bucket}.>"], max_msgs_per_subject=1, allow_rollup_hdrs=True)
    )
    refs = SlackRefs(await js.key_value(bucket), bucket)
    ref = ref_of(uid)
    await refs.save(ref)
    await refs.forget(ref)
    assert await refs.of_conversation(ref.conversation_id, "ep", "ava") is None
    said = [line["bucket"] for line in log_lines if line["event"] == "kv.no_message_ttl"]
    assert said == [bucket]
    await js.delete_stream(f"KV_{bucket}")


async def test_setup_lets_a_bucket_made_without_message_ttls_take_them(nc: NATS, uid: str) -> None:
    """A bucket made by an older client (no ``allow_msg_ttl``) refused every TTL, so its markers
    stayed for good; set-up turns them on in place (a change that deletes nothing)."""
    bucket = f"t{uid}"
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name=f"KV_{bucket}", subjects=[f"$KV.{bucket}.>"], max_msgs_per_subject=1, allow_rollup_hdrs=True)
    )
    await js.publish(f"$KV.{bucket}.kept", b"x")
    drift, _ = await ensure_store(js, kv_spec(KeyValueConfig(bucket=bucket, history=1)))
    assert [(d.field, d.status) for d in drift] == [("allow_msg_ttl", "updated")]
    assert (await js.stream_info(f"KV_{bucket}")).state.messages == 1  # nothing deleted
    await kv_expiry.put_expiring(js, bucket, "lapses", b"y", ttl=1.0)

    async def lapsed() -> bool:
        return await messages_on(nc, f"KV_{bucket}", f"$KV.{bucket}.lapses") == 0

    await eventually(lapsed)
    await js.delete_stream(f"KV_{bucket}")
