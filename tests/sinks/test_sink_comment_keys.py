"""A sink's per-comment keys (``synced.*``, ``ours.*``, ``relayed.*``) lapse with their
conversation, and those an older version wrote still count after an upgrade.

Named after a message or a comment, not its ticket, they were kept for good (one key per
synced message or relayed comment for as long as the deployment ran). Now named under their
ticket (``synced.<ticket>.<id>``), they are given the link's end when the conversation is
resolved, an hour after it; one written after the resolution gets it too. While the link is
there they stay: a Freshdesk webhook reads every entry of the ticket again, and without them it
would send the agent's old replies to the customer a second time. The keys an older version
wrote (``ours.<id>``) are read when the ticket's own is missing: an upgrade sends nothing again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.model import DeliveryFailed
from services.sinks.conformance.fake import FakeTicket
from services.sinks.conformance.rig import Rig, eventually
from services.sinks.freshdesk import FreshdeskSink
from services.sinks.sdk import state as sink_state
from services.sinks.sdk.state import ITEM_GRACE, LINK_KEPT, PER_COMMENT

from .freshdesk_fake import FakeFreshdesk, freshdesk_config
from .test_sink_failure_modes import make_rig
from .test_sink_key_expiry import GONE, resolve, ttl_of

pytestmark = pytest.mark.integration


async def comment_keys(rig: Rig, ticket: str) -> dict[str, list[str]]:
    """The ticket's per-comment keys that hold a value, by kind."""
    state = rig.sink.state
    out: dict[str, list[str]] = {}
    for kind in PER_COMMENT:
        out[kind] = [k for k in await state.keys(f"{kind}.{ticket}.") if await state.get(k) is not None]
    return out


def flat(keys: dict[str, list[str]]) -> list[str]:
    return [key for kind in keys.values() for key in kind]


async def talked(rig: Rig, fake: FakeFreshdesk, text: str) -> tuple[str, str, FakeTicket]:
    """A conversation with a ticket, a Relaydesk reply on it (a note) and a Freshdesk reply
    sent to the customer: every kind of per-comment key is there."""
    customer, conversation = await rig.open_assigned(text)
    ticket = await eventually(lambda: _async(fake.ticket_of(conversation)))
    await rig.agent_replies(customer, conversation, f"{text}: we refunded you")
    await fake.wait_for(lambda: any(c.body.endswith("we refunded you") for c in ticket.comments))
    status, _ = await rig.post(fake.agent_reply(ticket, f"{text}: anything else?"))
    assert status == 200
    await rig.caught_up(customer)
    keys = await comment_keys(rig, ticket.id)
    assert all(keys[kind] for kind in PER_COMMENT), keys
    return customer, conversation, ticket


async def _async(value: FakeTicket | None) -> FakeTicket | None:
    return value


async def test_a_resolved_conversations_comment_keys_lapse_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeFreshdesk()
    async with make_rig(tmp_path, fake, FreshdeskSink, freshdesk_config) as rig:
        customer, conversation, ticket = await talked(rig, fake, "resolved")
        _, _, open_ticket = await talked(rig, fake, "still open")
        reply_id = (await rig.replies(customer))[0].reply_id
        await resolve(rig, customer, conversation)
        await rig.caught_up(customer)
        for key in flat(await comment_keys(rig, ticket.id)):
            assert await ttl_of(rig, key) == str(int(LINK_KEPT + ITEM_GRACE)), key
        for key in flat(await comment_keys(rig, open_ticket.id)):
            assert await ttl_of(rig, key) is None, key  # open: kept however long it stays open

        # A bounce after the resolution: its note's keys end with the others.
        failed = DeliveryFailed(
            at=datetime.now(UTC),
            customer_id=customer,
            conversation_id=conversation,
            channel=rig.channel,
            reply_id=reply_id,
            reason="provider refused: unknown number",
        )
        await rig.append(failed)
        await rig.caught_up(customer)
        key = f"synced.{ticket.id}.failed-{reply_id}"
        ttl = await ttl_of(rig, key)
        assert ttl not in (None, GONE) and LINK_KEPT < int(str(ttl)) <= LINK_KEPT + ITEM_GRACE, ttl

        # And they do go: here a second after the link, itself a second after the resolution.
        monkeypatch.setattr(sink_state, "LINK_KEPT", 1.0)
        monkeypatch.setattr(sink_state, "ITEM_GRACE", 1.0)
        lapsing, lapsing_conversation, lapsing_ticket = await talked(rig, fake, "lapsing")
        await resolve(rig, lapsing, lapsing_conversation)
        await rig.caught_up(lapsing)

        async def gone() -> bool:
            keys = await comment_keys(rig, lapsing_ticket.id)
            return not any(keys.values()) and await ttl_of(rig, f"ends.{lapsing_ticket.id}") == GONE

        await eventually(gone, timeout=15)
        assert any((await comment_keys(rig, open_ticket.id)).values())


async def test_an_upgrade_sends_no_old_comment_again(tmp_path: Path) -> None:
    """Keys written by the previous layout (``ours.<note id>``, ``relayed.<entry id>``,
    ``synced.<message id>``) still count: the Freshdesk webhook that reads every entry of the
    ticket sends nothing again, and reading the log again posts no second note."""
    fake = FakeFreshdesk()
    async with make_rig(tmp_path, fake, FreshdeskSink, freshdesk_config) as rig:
        customer, _, ticket = await talked(rig, fake, "before the upgrade")
        state = rig.sink.state
        for kind, keys in (await comment_keys(rig, ticket.id)).items():
            for key in keys:
                value = await state.get(key)
                assert value is not None
                await state.put(f"{kind}.{key.rsplit('.', 1)[1]}", value)  # the old name
                await state.delete(key)
        for key in await state.keys(f"posting.{ticket.id}."):
            await state.delete(key)  # the body markers are long gone by then
        sent, comments = len(await rig.replies(customer)), len(ticket.comments)

        status, answer = await rig.post(fake._webhook(ticket))  # any later update of the ticket
        assert status == 200 and answer["replies_sent"] == 0, answer
        assert len(await rig.replies(customer)) == sent
        await rig.restart(replay=True)
        await rig.caught_up(customer)
        assert len(ticket.comments) == comments, [c.body for c in ticket.comments]
