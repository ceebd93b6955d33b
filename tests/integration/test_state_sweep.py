"""``relaydesk setup`` clears what ``rd_state`` kept for good before its keys expired by
themselves: removed Slack references' markers and sent mails' entries past ``SENT_KEPT``;
live references, recent entries and keys of others are left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from connectors.email.bounces import SENT_KEPT, sent_key
from events import subjects
from services.delivery.slack_refs import MessageRef, SlackRefs, conversation_key, thread_key
from services.state_sweep import STREAM, sweep_state

pytestmark = pytest.mark.integration


async def present(nc: NATS, key: str) -> bool:
    try:
        await nc.jetstream().get_last_msg(STREAM, f"$KV.{subjects.STATE_BUCKET}.{key}")
    except NotFoundError:
        return False
    return True


async def test_old_markers_and_entries_go_and_the_rest_stays(nc: NATS, uid: str) -> None:
    js = nc.jetstream()
    kv = await js.key_value(subjects.STATE_BUCKET)
    refs = SlackRefs(kv)
    gone = MessageRef(
        conversation_id=f"a{uid}", customer_id="c", agent_id="ava", endpoint_id="ep", channel="C", ts="1.1"
    )
    live = MessageRef(
        conversation_id=f"b{uid}", customer_id="c", agent_id="ava", endpoint_id="ep", channel="C", ts="2.2"
    )
    for ref in (gone, live):
        await refs.save(ref)
    removed = [conversation_key(gone.conversation_id, "ep", "ava"), thread_key("C", gone.ts)]
    for key in removed:
        await kv.delete(key)  # as delivery did before its markers lapsed
    old_mail = sent_key(f"o{uid}")
    await kv.put(old_mail, b"{}")  # as the email connector did before its entries lapsed
    other = f"email.imap.{uid}"
    await kv.put(other, b"1")

    # Now: the markers go; the entry is recent, and stays.
    swept = await sweep_state(js, datetime.now(UTC))
    assert swept.markers >= 2
    assert [key for key in removed if await present(nc, key)] == []
    assert await present(nc, conversation_key(live.conversation_id, "ep", "ava"))
    assert await present(nc, thread_key("C", live.ts)) and await present(nc, old_mail)

    # Past SENT_KEPT the entry goes; live references and others' keys stay.
    swept = await sweep_state(js, datetime.now(UTC) + timedelta(seconds=SENT_KEPT + 60))
    assert swept.entries >= 1 and not await present(nc, old_mail)
    assert await present(nc, conversation_key(live.conversation_id, "ep", "ava")) and await present(nc, other)
